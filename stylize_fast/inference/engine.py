"""Stylizer: the real-time inference engine (tensors, images, folders, videos)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import allocator
from .dispatch import RunStats, stylize_files
from .tiling import stylize_tiled

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Images with more pixels than this are tiled automatically (tile=None).
AUTO_TILE_PIXELS = 2048 * 2048
AUTO_TILE_SIZE = 1024
DEFAULT_OVERLAP = 64
# The generators need a few pixels per side at their coarsest scale.
MIN_SIDE = 16


def _ycbcr(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BT.601 full-range Y, Cb, Cr of ``(N, 3, H, W)`` RGB in 0-255."""
    r, g, b = rgb.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return y, cb, cr


def preserve_color(content: torch.Tensor, stylized: torch.Tensor) -> torch.Tensor:
    """Luminance transfer: the stylised image's Y with the content's Cb, Cr (BT.601).
    ``(N, 3, H, W)`` RGB 0-255 each -> ``(N, 3, H, W)``."""
    y, _, _ = _ycbcr(stylized)
    _, cb, cr = _ycbcr(content)
    cb, cr = cb - 128, cr - 128
    return torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)


def blend(content: torch.Tensor, stylized: torch.Tensor, strength: float) -> torch.Tensor:
    """``content + strength * (stylized - content)``: 0 keeps the content, 1 full style."""
    if strength == 1.0:
        return stylized
    return content + (stylized - content) * strength


class Stylizer:
    """Runs a generator on tensors, images, folders and videos.

    Any image size works (padded to the model's ``multiple`` and cropped back); images above
    ``AUTO_TILE_PIXELS`` run in overlapping tiles. Files keep their alpha channel and bit depth
    (16-bit PNG in, 16-bit PNG out); grayscale inputs give colour outputs, or grayscale ones
    with ``preserve_color``. The model is put in eval mode (and copied if it must be converted).

    Args:
        model: an ``nn.Module`` (RGB 0-255 in and out) or a model file for
            :func:`stylize_fast.models.load`.
        device: where to run (``"cpu"``, ``"cuda"``, ...).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (or a torch dtype): the weights
            and activations are converted (bfloat16 works on CPU); outputs are float32.
        channels_last: run in the channels_last memory format.
        batch_size: images of one size (or video frames) per forward.
        tile: tile side for large images; None tiles automatically above
            ``AUTO_TILE_PIXELS`` with ``AUTO_TILE_SIZE`` tiles, 0 never tiles.
        tile_overlap: pixels shared by neighbouring tiles (cross-faded).
        preserve_color: keep the content's colours (luminance transfer in YCbCr).
        strength: blend with the content, 0 (content) .. 1 (full style).
        progress: show a tqdm progress bar and print images/s at the end (files / video).
        tune_allocator: keep glibc from returning large activations to the OS between
            forwards (see :mod:`stylize_fast.inference.allocator`); ~40% of a CPU forward.
        norm: with a model file, build it with this norm (e.g. ``"instance"``).
        style: for a multi-style model (``styles > 1``), the style every image gets: an int
            index, or a list of mixing weights, one per style (normalised to sum to 1).
            Required for such models; an error for single-style ones.
        style_images: for an AdaIN model (:class:`~stylize_fast.models.AdaINNet`), the style
            image(s): file paths or ``(3, H, W)`` / ``(1, 3, H, W)`` tensors in 0-255. Their
            statistics are computed once (per content image with ``preserve_color``).
        style_weights: AdaIN: mixing weights, one per style image (default: equal).
        alpha: AdaIN: content / style trade-off in feature space, 0 .. 1 (1: full style).
            With an AdaIN model, ``preserve_color`` recolours the style image(s) to each
            content image's colour statistics before stylising (Huang and Belongie), instead of
            the luminance transfer the generators use.
    """

    def __init__(
        self,
        model: nn.Module | str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        channels_last: bool = False,
        batch_size: int = 4,
        tile: int | None = None,
        tile_overlap: int = DEFAULT_OVERLAP,
        preserve_color: bool = False,
        strength: float = 1.0,
        progress: bool = False,
        tune_allocator: bool = True,
        norm: str | None = None,
        style: int | Sequence[float] | None = None,
        style_images: Sequence | None = None,
        style_weights: Sequence[float] | None = None,
        alpha: float = 1.0,
    ) -> None:
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(f"Stylizer: dtype must be one of {list(DTYPES)}, got {dtype!r}")
            dtype = DTYPES[dtype]
        if dtype not in DTYPES.values():
            raise ValueError(f"Stylizer: dtype must be one of {list(DTYPES)}, got {dtype}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Stylizer: batch_size must be a positive int, got {batch_size!r}")
        if tile is not None and (not isinstance(tile, int) or tile < 0):
            raise ValueError(f"Stylizer: tile must be None, 0 or a positive int, got {tile!r}")
        if tile and not 0 <= tile_overlap < tile:
            raise ValueError(f"Stylizer: tile_overlap must be in [0, tile), got {tile_overlap} "
                             f"with tile={tile}")
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"Stylizer: strength must be in [0, 1], got {strength!r}")
        self.allocator_tuned = allocator.tune_allocator() if tune_allocator else False
        self.device = torch.device(device)
        try:
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as exc:  # e.g. CUDA asked for, CPU-only torch
            raise ValueError(f"Stylizer: device {str(device)!r} is not usable here: "
                             f"{str(exc).splitlines()[0]}") from exc
        if not isinstance(model, nn.Module):
            from ..models import load

            model = load(model, map_location="cpu", norm=norm)
        elif dtype != torch.float32 or channels_last or self.device.type != "cpu":
            model = copy.deepcopy(model)  # leave the caller's model as it was
        self.model = model.eval().to(device=self.device, dtype=dtype)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.dtype = dtype
        self.channels_last = channels_last
        self.batch_size = batch_size
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.preserve_color = preserve_color
        self.strength = float(strength)
        self.progress = progress
        self.multiple = int(getattr(model, "multiple", 1))
        self.adain = hasattr(self.model, "stylize_with_stats")
        if self.adain:
            if style is not None:
                raise ValueError("Stylizer: an AdaIN model takes style_images (--style IMAGE), "
                                 "not a style index / weights over learned styles")
            self.style = None
            self._setup_adain(style_images, style_weights, alpha)
        else:
            if style_images is not None or style_weights is not None or alpha != 1.0:
                raise ValueError("Stylizer: style_images / style_weights / alpha (--style IMAGE, "
                                 "--alpha) are for AdaIN models; this model has its style(s) "
                                 "built in")
            self.style = self._select_style(style)

    def _select_style(self, style):
        """The checked one-row style selection of a multi-style model (None otherwise)."""
        from ..nn.conditional_instance_norm import select_styles
        from ..training.styles import model_styles

        styles = model_styles(self.model)
        if styles == 1:
            if style is not None:
                raise ValueError("Stylizer: style (--style-index / --style-weights) given, but "
                                 "this model has a single style")
            return None
        if style is None:
            raise ValueError(f"Stylizer: this model holds {styles} styles; choose one with "
                             f"style=K (--style-index K, 0..{styles - 1}) or blend them with "
                             f"style=[w_0, ..., w_{styles - 1}] (--style-weights)")
        selection = select_styles(style, styles, 1, "Stylizer: style")
        return type(selection)(*(t.to(self.device) if t is not None else None
                                 for t in selection))

    def _setup_adain(self, style_images, style_weights, alpha) -> None:
        from ..training.data import load_style

        if not style_images:
            raise ValueError("Stylizer: an AdaIN model needs style_images (--style IMAGE ...)")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"Stylizer: alpha must be in [0, 1], got {alpha!r}")
        images = []
        for item in style_images:
            if isinstance(item, torch.Tensor):
                t = item if item.dim() == 4 else item.unsqueeze(0)
                if t.dim() != 4 or t.shape[:2] != (1, 3):
                    raise ValueError(f"Stylizer: a style image tensor must be (3, H, W) or "
                                     f"(1, 3, H, W), got {tuple(item.shape)}")
            else:
                t = load_style(item)  # clear errors for missing / unreadable files
            images.append(t.to(device=self.device, dtype=self.dtype))
        if style_weights is not None and len(style_weights) != len(images):
            raise ValueError(f"Stylizer: {len(style_weights)} style weights for "
                             f"{len(images)} style images (--style-weights needs one per "
                             f"--style image)")
        self.style_images = images
        self.style_weights = None if style_weights is None else [float(w) for w in style_weights]
        self.alpha = float(alpha)
        self.style_stats = None
        if not self.preserve_color:
            with torch.inference_mode():
                self.style_stats = self.model.style_stats(images, self.style_weights)

    def _adain_stats(self, content: torch.Tensor):
        """Per-sample style statistics: the fixed ones, or with ``preserve_color`` the style
        images recoloured to each whole content image (before padding and tiling)."""
        from .color import match_color

        means, stds = [], []
        for image in content:
            recoloured = [match_color(s[0].float(), image.float()).unsqueeze(0).to(self.dtype)
                          for s in self.style_images]
            mean, std = self.model.style_stats(recoloured, self.style_weights)
            means.append(mean)
            stds.append(std)
        return torch.cat(means), torch.cat(stds)

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        if self.adain:
            mean, std = self.style_stats
            return self.model.stylize_with_stats(x, mean, std, self.alpha)
        if self.style is None:
            return self.model(x)
        return self.model(x, self.style)

    # -- tensors -------------------------------------------------------------------------------

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model on ``(N, 3, h, w)`` float32 0-255 of any size; pads to the model's multiple
        (reflect where possible) and crops back. Returns float32 ``(N, 3, h, w)``."""
        h, w = x.shape[-2:]
        m = self.multiple
        th, tw = max(-(-h // m) * m, MIN_SIDE), max(-(-w // m) * m, MIN_SIDE)
        if (th, tw) != (h, w):
            ph, pw = th - h, tw - w
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode=mode)
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self._model(x).float()
        if (th, tw) != (h, w):
            y = y[..., ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
        return y

    def tile_for(self, h: int, w: int) -> int:
        """The tile side an ``h`` x ``w`` image runs in, 0 for untiled."""
        if self.tile is None:
            return AUTO_TILE_SIZE if h * w > AUTO_TILE_PIXELS else 0
        return self.tile if self.tile < max(h, w) else 0

    @torch.inference_mode()
    def stylize_tensor(self, content: torch.Tensor) -> torch.Tensor:
        """Stylise ``(N, 3, H, W)`` or ``(3, H, W)`` RGB in 0-255 (any float dtype, any size);
        returns float32 of the same shape on this Stylizer's device, clamped to 0-255."""
        if not isinstance(content, torch.Tensor) or content.dim() not in (3, 4) \
                or content.shape[-3] != 3:
            shape = tuple(content.shape) if isinstance(content, torch.Tensor) else type(content)
            raise ValueError(f"stylize_tensor: content must be a (N, 3, H, W) or (3, H, W) "
                             f"tensor, got {shape}")
        unbatched = content.dim() == 3
        x = content.unsqueeze(0) if unbatched else content
        x = x.to(device=self.device, dtype=torch.float32)
        tile = self.tile_for(*x.shape[-2:])
        recolour = self.adain and self.preserve_color
        if tile:
            rows = []
            for i in range(x.shape[0]):
                if recolour:
                    self.style_stats = self._adain_stats(x[i:i + 1])
                rows.append(stylize_tiled(self._forward, x[i:i + 1], tile, self.tile_overlap))
            y = torch.cat(rows)
        else:
            if recolour:
                self.style_stats = self._adain_stats(x)
            y = self._forward(x)
        y = y.clamp_(0, 255)  # a valid image first, so that blending mixes two images
        if self.preserve_color and not self.adain:
            y = preserve_color(x, y).clamp_(0, 255)
        y = blend(x, y, self.strength)
        return y[0] if unbatched else y

    def stylize_array(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` RGB array (0-255) -> stylised float32 ``(H, W, 3)``."""
        x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)
        return self.stylize_tensor(x).permute(1, 2, 0).cpu().numpy()

    def stylize_image(self, image):
        """Stylise a ``PIL.Image`` (any mode; alpha kept) and return a ``PIL.Image``."""
        from PIL import Image, ImageOps

        image = ImageOps.exif_transpose(image)
        alpha = image.getchannel("A") if "A" in image.getbands() else None
        out = np.rint(self.stylize_array(np.asarray(image.convert("RGB"), np.float32)))
        result = Image.fromarray(out.astype(np.uint8))
        if alpha is not None:
            result.putalpha(alpha)
        return result

    # -- files ---------------------------------------------------------------------------------

    def stylize_files(self, jobs: Sequence[tuple[str, str]]) -> RunStats:
        """Stylise image and video files: ``jobs`` is ``[(input, output), ...]``.

        Images of the same size (after EXIF orientation) are batched ``batch_size`` at a time;
        unreadable images are skipped with a warning and listed in ``RunStats.failed``."""
        return stylize_files(self, jobs)

    def iter_batches(self, frames: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        """Stylise a stream of ``(H, W, 3)`` uint8 frames of one size, ``batch_size`` at a time;
        yields stylised ``(H, W, 3)`` uint8 frames in order."""
        pending: list[np.ndarray] = []

        def flush():
            x = torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2)
            y = self.stylize_tensor(x).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
            pending.clear()
            return list(y.numpy())

        for frame in frames:
            pending.append(frame)
            if len(pending) == self.batch_size:
                yield from flush()
        if pending:
            yield from flush()
