"""Several styles in one generator: which style each sample trains, style thumbnails for the
model file, and adding a style to a trained model (only its new (gamma, beta) rows learn).

The style of each sample is a pure function of (seed, iteration, position in the global batch),
like the data order, so a resumed or distributed run draws exactly the styles an uninterrupted
single-process one does.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..nn.conditional_instance_norm import ConditionalInstanceNorm2d
from .data import _mix

THUMBNAIL_SIZE = 64  # side of the square style thumbnails stored in model files
_STYLE_STREAM = 0x5757  # separates the style draws from the data pipeline's seeds

ARCH_NAMES = {"JohnsonNet": "johnson", "TextureNet": "texture"}


def draw_style_indices(seed: int, iteration: int, rank: int, batch: int, num_styles: int,
                       world_size: int = 1) -> torch.Tensor:
    """The style index of every sample of ``iteration`` on ``rank``: ``(batch,)`` int64,
    uniform over ``[0, num_styles)``, independent of any global RNG. Drawn for the global batch
    (``world_size * batch``) and sliced as the data sampler slices it, so ``W`` ranks of batch
    ``B`` train the styles one process of batch ``W * B`` would."""
    gen = torch.Generator().manual_seed(_mix(seed, iteration, _STYLE_STREAM))
    styles = torch.randint(num_styles, (world_size * batch,), generator=gen)
    return styles[rank * batch:(rank + 1) * batch]


def thumbnail(image: torch.Tensor, size: int = THUMBNAIL_SIZE) -> torch.Tensor:
    """A ``(3, size, size)`` uint8 centre crop of a ``(1, 3, H, W)`` 0-255 image, for model
    files and ``stylize-fast info``."""
    x = image.detach().float().cpu()
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[..., top:top + side, left:left + side]
    x = nn.functional.interpolate(x, size=(size, size), mode="area")
    return x[0].clamp(0, 255).round().to(torch.uint8)


def style_names(metadata: dict[str, Any], num_styles: int) -> list[str]:
    """Style names recorded in a model file's metadata (``styles``, or the single-style files'
    ``style``), padded with ``style <k>`` for files that predate them."""
    names = metadata.get("styles")
    if not isinstance(names, list):
        single = metadata.get("style")
        names = [single] if isinstance(single, str) and num_styles == 1 else []
    names = [str(n) for n in names][:num_styles]
    return names + [f"style {k}" for k in range(len(names), num_styles)]


def style_thumbnails(metadata: dict[str, Any], num_styles: int) -> torch.Tensor | None:
    """The ``(S, 3, T, T)`` uint8 thumbnails of a model file, or None if it has none."""
    thumbs = metadata.get("style_thumbnails")
    if isinstance(thumbs, torch.Tensor) and thumbs.dim() == 4 and thumbs.shape[0] == num_styles:
        return thumbs
    return None


def conditional_norms(model: nn.Module) -> list[ConditionalInstanceNorm2d]:
    return [m for m in model.modules() if isinstance(m, ConditionalInstanceNorm2d)]


def model_styles(model: nn.Module) -> int:
    """How many styles ``model`` holds (1 for single-style models)."""
    return int(getattr(model, "styles", 1))


def extend_model(model_file: str | os.PathLike) -> tuple[nn.Module, dict[str, Any], int]:
    """A copy of the generator in ``model_file`` with one more style.

    Returns ``(model, checkpoint, new_index)``: every weight is the file's; each conditional
    norm's new row starts as the mean of the existing rows (a single-style model's one row).
    The file's model may have any number of styles, 1 included."""
    from .. import models

    ckpt = models.load_checkpoint(model_file)
    if ckpt["arch"] not in ARCH_NAMES:
        raise ValueError(f"--model: {model_file} holds a {ckpt['arch']}; styles can be added to "
                         f"{sorted(ARCH_NAMES)} models")
    options = dict(ckpt["options"])
    if options.get("norm", "fused") == "batch":
        raise ValueError(f"--model: {model_file} is a batch-norm model; adding a style needs "
                         f"instance norm (conditional instance norm)")
    old = int(options.get("styles", 1))
    base = models.build(ckpt["arch"], options)
    try:
        base.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"--model: weights of {model_file} do not fit {ckpt['arch']}: {exc}") \
            from exc
    options["styles"] = old + 1
    model = models.build(ckpt["arch"], options)
    state = {}
    targets = dict(model.state_dict())
    for key, value in base.state_dict().items():
        target = targets[key]
        if target.shape != value.shape:  # a conditional norm's (S, C) table, one row longer
            rows = value.reshape(-1, value.shape[-1]).to(target.dtype)
            value = torch.cat([rows, rows.mean(0, keepdim=True)])
        state[key] = value
    model.load_state_dict(state, strict=True)
    return model, ckpt, old


def train_only_new_rows(model: nn.Module, first_new: int) -> list[nn.Parameter]:
    """Freeze ``model`` except the style rows ``first_new:`` of its conditional norms; returns
    the parameters left trainable. A gradient hook zeroes the older rows' gradients, so with
    Adam (no weight decay) their values stay bit-identical."""
    model.requires_grad_(False)
    trainable = []
    for norm in conditional_norms(model):
        for param in (norm.weight, norm.bias):
            param.requires_grad_(True)
            mask = torch.zeros_like(param, dtype=torch.bool)
            mask[first_new:] = True
            param.register_hook(lambda grad, mask=mask: torch.where(mask, grad,
                                                                    torch.zeros_like(grad)))
            trainable.append(param)
    if not trainable:
        raise ValueError("train_only_new_rows: the model has no conditional instance norms")
    return trainable
