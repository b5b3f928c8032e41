"""TextureNet: Ulyanov et al.'s multi-scale generator (texture_nets ``models/pyramid.lua``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import norm_on_load as nol
from .layers import (
    ACTIVATIONS,
    NORMS,
    PADDING_MODES,
    apply_norm,
    check_channels_last,
    check_choice,
    check_positive_int,
    generator_layouts,
    make_norm,
    make_padded_conv,
    resolve_style,
)


class ConvBlock(nn.Module):
    """conv 3x3, norm, act, conv 3x3, norm, act, conv 1x1, norm, act (padded: size kept).

    Keys: ``conv{1,2,3}.weight``/``.bias`` and ``norm{1,2,3}.*``.
    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)``. ``style``: the checked
    selection of a conditional (``styles > 1``) block, else None."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, padding_mode: str,
                 activation: str, negative_slope: float, styles: int = 1) -> None:
        super().__init__()
        fused = norm == "fused"
        self.pad1, self.conv1 = make_padded_conv(in_channels, out_channels, 3, 1, padding_mode,
                                                 fused)
        self.norm1, self.act1 = make_norm(out_channels, norm, activation, negative_slope, styles)
        self.pad2, self.conv2 = make_padded_conv(out_channels, out_channels, 3, 1, padding_mode,
                                                 fused)
        self.norm2, self.act2 = make_norm(out_channels, norm, activation, negative_slope, styles)
        self.conv3 = nn.Conv2d(out_channels, out_channels, 1)
        self.norm3, self.act3 = make_norm(out_channels, norm, activation, negative_slope, styles)

    def forward(self, x: torch.Tensor, style=None) -> torch.Tensor:
        x = self.act1(apply_norm(self.norm1, self.conv1(self.pad1(x)), style))
        x = self.act2(apply_norm(self.norm2, self.conv2(self.pad2(x)), style))
        return self.act3(apply_norm(self.norm3, self.conv3(x), style))

    def forward_norm_on_load(self, x, style=None) -> torch.Tensor:
        """The same with norm1 and norm2 applied as conv2 and conv3 load their inputs
        (nn.norm_on_load); ``x`` may itself be a Pending (a join's normalised concatenation)."""
        h, mean, rstd = nol.conv(self.conv1, x, stats_eps=self.norm1.eps)
        h, mean, rstd = nol.conv(self.conv2, nol.pending(self.norm1, h, mean, rstd, style),
                                 stats_eps=self.norm2.eps)
        h, mean, rstd = nol.conv(self.conv3, nol.pending(self.norm2, h, mean, rstd, style),
                                 stats_eps=self.norm3.eps)
        return nol.normalize(self.norm3, h, mean, rstd, style)


class Join(nn.Module):
    """Upsample the coarser path x2 (nearest), normalise each input, concatenate channels
    (coarse first). Keys: ``norm_coarse.*``, ``norm_fine.*``."""

    def __init__(self, coarse_channels: int, fine_channels: int, norm: str,
                 styles: int = 1) -> None:
        super().__init__()
        self.norm_coarse, _ = make_norm(coarse_channels, norm, None, styles=styles)
        self.norm_fine, _ = make_norm(fine_channels, norm, None, styles=styles)

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor, style=None) -> torch.Tensor:
        coarse = F.interpolate(coarse, scale_factor=2.0, mode="nearest")
        return torch.cat([apply_norm(self.norm_coarse, coarse, style),
                          apply_norm(self.norm_fine, fine, style)], dim=1)

    def forward_norm_on_load(self, coarse: torch.Tensor, fine: torch.Tensor,
                             style=None) -> nol.Pending:
        """The concatenation of the raw inputs (coarse upsampled straight into its slice) with
        both norms pending for the next convolution's loads. Nearest x2 upsampling repeats every
        pixel four times, so the upsampled tensor's statistics are the coarse one's."""
        n, cc, h, w = coarse.shape
        cf = fine.shape[1]
        fmt = torch.channels_last if fine.is_contiguous(
            memory_format=torch.channels_last) and not fine.is_contiguous() else \
            torch.contiguous_format
        raw = torch.empty((n, cc + cf, 2 * h, 2 * w), dtype=fine.dtype, device=fine.device,
                          memory_format=fmt)
        raw[:, :cc].unflatten(2, (h, 2)).unflatten(4, (w, 2)).copy_(
            coarse[:, :, :, None, :, None].expand(n, cc, h, 2, w, 2))
        raw[:, cc:].copy_(fine)
        parts = []
        for norm, t in ((self.norm_coarse, coarse), (self.norm_fine, fine)):
            mean, rstd = nol.stats(t, norm.eps)
            parts.append(nol.pending(norm, t, mean, rstd, style))
        return nol.Pending(raw, torch.cat([parts[0].scale, parts[1].scale], 1),
                           torch.cat([parts[0].shift, parts[1].shift], 1), 0, 0.01)


class TextureNet(nn.Module):
    """Ulyanov et al. (2016) multi-scale ("pyramid") generator; RGB 0-255 in and out.

    The input is average-pooled by 32, 16, 8, 4, 2, 1; each scale goes through a
    :class:`ConvBlock` to ``branch_channels`` (8); from the coarsest up, the running path is
    upsampled x2, both inputs normalised and concatenated (16, 24, ... 48 channels) and passed
    through a ConvBlock of that width; a final 1x1 conv maps 48 -> 3. With RGB input: 116,915
    parameters. Sides that are not multiples of 32 (or below 64) are padded (replicate) and
    cropped back.

    Args:
        norm: ``"fused"``, ``"instance"`` or ``"batch"``.
        in_channels: image channels (3).
        out_channels: output channels (3).
        branch_channels: channels each scale adds (8).
        num_scales: number of scales (6: pooling by 32 ... 1).
        noise_channels: extra uniform-noise channels concatenated to every scale's input (the
            ICML'16 variant); 0 for none.
        activation: ``"relu"`` or ``"leaky_relu"`` (some texture_nets versions).
        negative_slope: slope of ``"leaky_relu"``.
        padding_mode: ``"replicate"`` (texture_nets) or ``"reflect"`` / ``"zeros"``.
        channels_last: compute in the channels_last memory format (input and output keep their
            own layout). None (default): yes for ``norm="fused"`` on CPU, where the fused norms
            handle 8..48 channels in place (measured 0.47x the eager model's time at 512²,
            against 0.76x in NCHW); no otherwise. A runtime choice, not part of the
            architecture.
        styles: number of styles (1). Above 1 every instance norm is conditional (Dumoulin et
            al.): one affine row per style (``weight`` / ``bias`` of shape ``(styles, C)``), the
            style chosen per sample in the forward. ``norm="batch"`` has no conditional form.

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)``, any H, W >= 1.
    """

    multiple = 1  # any size works (padded internally to `internal_multiple`)

    def __init__(
        self,
        norm: str = "fused",
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        branch_channels: int = 8,
        num_scales: int = 6,
        noise_channels: int = 0,
        activation: str = "relu",
        negative_slope: float = 0.01,
        padding_mode: str = "replicate",
        channels_last: bool | None = None,
        styles: int = 1,
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        check_channels_last(fn, channels_last)
        self.channels_last = channels_last
        check_choice(fn, "norm", norm, NORMS)
        check_choice(fn, "activation", activation, ACTIVATIONS)
        check_choice(fn, "padding_mode", padding_mode, PADDING_MODES)
        check_positive_int(fn, "in_channels", in_channels)
        check_positive_int(fn, "out_channels", out_channels)
        check_positive_int(fn, "branch_channels", branch_channels)
        check_positive_int(fn, "num_scales", num_scales)
        check_positive_int(fn, "noise_channels", noise_channels, minimum=0)
        check_positive_int(fn, "styles", styles)
        if styles > 1 and norm == "batch":
            raise ValueError(f"{fn}: styles > 1 needs norm='instance' or 'fused' (conditional "
                             f"instance norm), not 'batch'")
        if num_scales > 12:
            raise ValueError(f"{fn}: num_scales must be <= 12, got {num_scales}")
        self.options = dict(norm=norm, in_channels=in_channels, out_channels=out_channels,
                            branch_channels=branch_channels, num_scales=num_scales,
                            noise_channels=noise_channels, activation=activation,
                            negative_slope=float(negative_slope), padding_mode=padding_mode)
        if styles > 1:  # styles=1 leaves the options (and files) of single-style models as they were
            self.options["styles"] = styles
        self.styles = styles
        self.norm = norm
        self.noise_channels = noise_channels
        self.num_scales = num_scales
        self.padding_mode = padding_mode
        self.internal_multiple = 2 ** (num_scales - 1)
        block_in = in_channels + noise_channels
        args = (norm, padding_mode, activation, float(negative_slope), styles)
        # Scale 0 is the coarsest (pooled by 2**(num_scales-1)), the last one full resolution.
        self.branches = nn.ModuleList(
            [ConvBlock(block_in, branch_channels, *args) for _ in range(num_scales)])
        self.joins = nn.ModuleList()
        self.merges = nn.ModuleList()
        for k in range(1, num_scales):
            width = branch_channels * k
            self.joins.append(Join(width, branch_channels, norm, styles))
            self.merges.append(ConvBlock(width + branch_channels, width + branch_channels, *args))
        self.final = nn.Conv2d(branch_channels * num_scales, out_channels, 1)

    def forward(self, x: torch.Tensor, style=None,
                noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, C_out, H, W)``. ``style``: None for a single-style model,
        else the style index ``(N,)`` or mixing weights ``(N, styles)`` per sample. ``noise``
        (optional, only with ``noise_channels``): one ``(N, noise_channels, H_k, W_k)`` tensor
        per scale, coarsest first, at the padded sizes; drawn uniformly in [0, 1) when not
        given. The output has the input's memory format."""
        if (isinstance(style, (list, tuple)) and style and isinstance(style[0], torch.Tensor)
                and noise is None):
            style, noise = None, list(style)  # model(x, noise) as before styles existed
        selection = resolve_style(type(self).__name__, self.styles, style, x.shape[0])
        compute_format, out_format = generator_layouts(x, self.channels_last, self.norm)
        if compute_format == torch.channels_last:
            x = x.contiguous(memory_format=compute_format)
        return self._forward(x, noise, compute_format, selection).contiguous(
            memory_format=out_format)

    def norm_on_load(self) -> bool:
        """Whether the forward normalises as the next convolution loads (nn.norm_on_load):
        fused norms and supported convolutions throughout, option on, no forward hooks."""
        if self.norm != "fused" or not nol.enabled() or nol.hooked(self):
            return False
        norms = [m for name, m in self.named_modules() if name.split(".")[-1].startswith("norm")]
        convs = [m for name, m in self.named_modules()
                 if name.split(".")[-1].startswith("conv") and name != "final"]
        return all(nol.norm_supported(m) for m in norms) and all(
            nol.conv_supported(m) for m in convs)

    def _forward(self, x: torch.Tensor, noise: list[torch.Tensor] | None,
                 compute_format: torch.memory_format, style=None) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        m = self.internal_multiple
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if tracing:
            # Traced size arithmetic stays dynamic (exported models take any size > 32); the
            # branches below must not depend on the example's size.
            pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        else:
            # At least 2x2 at the coarsest scale: instance norm needs more than one element.
            pad_h = max(-(-h // m) * m, 2 * m) - h
            pad_w = max(-(-w // m) * m, 2 * m) - w
        if tracing or pad_h or pad_w:
            # Replicate works for any size (reflect needs pad < side); crop back at the end.
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        path = x
        use_nol = not tracing and self.norm_on_load()
        for k in range(self.num_scales):
            factor = 2 ** (self.num_scales - 1 - k)
            z = F.avg_pool2d(x, factor) if factor > 1 else x
            if self.noise_channels:
                if noise is not None:
                    extra = noise[k]
                else:
                    extra = torch.rand(z.shape[0], self.noise_channels, z.shape[2], z.shape[3],
                                       dtype=z.dtype, device=z.device)
                # cat of mixed layouts gives NCHW: keep the computing layout.
                z = torch.cat([z, extra.to(z)], dim=1).contiguous(memory_format=compute_format)
            if use_nol:
                z = self.branches[k].forward_norm_on_load(z, style)
                path = z if k == 0 else self.merges[k - 1].forward_norm_on_load(
                    self.joins[k - 1].forward_norm_on_load(path, z, style), style)
                continue
            z = self.branches[k](z, style)
            if k == 0:
                path = z
            else:
                path = self.merges[k - 1](self.joins[k - 1](path, z, style), style)
        y = self.final(path)
        if tracing or pad_h or pad_w:
            y = y[..., :h, :w]
        return y

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
