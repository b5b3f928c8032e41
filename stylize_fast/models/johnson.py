"""JohnsonNet: Johnson et al.'s residual generator, by default exactly the PyTorch examples'
``fast_neural_style`` ``TransformerNet`` (layout, 1,679,235 parameters, ``state_dict`` keys)."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import norm_on_load as nol
from ..nn.padded_conv import PaddedConv2d
from .layers import (
    NORMS,
    PADDING_MODES,
    ConvLayer,
    UpsampleConvLayer,
    apply_norm,
    check_channels_last,
    check_choice,
    check_positive_int,
    generator_layouts,
    make_activation,
    make_norm,
    resolve_style,
)


class ResidualBlock(nn.Module):
    """conv 3x3, norm, ReLU, conv 3x3, norm, + input (no activation after the add).
    Keys: ``conv1.conv2d.*``, ``in1.*``, ``conv2.conv2d.*``, ``in2.*``. ``style``: the checked
    selection of a conditional (``styles > 1``) block, else None."""

    def __init__(self, channels: int, norm: str = "fused", padding_mode: str = "reflect",
                 styles: int = 1) -> None:
        super().__init__()
        fused = norm == "fused"
        self.conv1 = ConvLayer(channels, channels, 3, 1, padding_mode, fused)
        self.in1, self.relu = make_norm(channels, norm, "relu", styles=styles)
        self.conv2 = ConvLayer(channels, channels, 3, 1, padding_mode, fused)
        self.in2, _ = make_norm(channels, norm, None, styles=styles)

    def forward(self, x: torch.Tensor, style=None) -> torch.Tensor:
        out = self.relu(apply_norm(self.in1, self.conv1(x), style))
        return apply_norm(self.in2, self.conv2(out), style) + x

    def forward_norm_on_load(self, x: torch.Tensor, style=None) -> torch.Tensor:
        """The same with in1 applied as conv2 loads its input (nn.norm_on_load)."""
        h, mean, rstd = nol.conv(self.conv1.conv2d, x, stats_eps=self.in1.eps)
        h, mean, rstd = nol.conv(self.conv2.conv2d, nol.pending(self.in1, h, mean, rstd, style),
                                 stats_eps=self.in2.eps)
        return nol.normalize(self.in2, h, mean, rstd, style, residual=x)


class JohnsonNet(nn.Module):
    """Johnson et al. (2016) image transformation network; RGB in 0-255 in and out.

    Default: the PyTorch examples' ``TransformerNet`` -- reflection-padded 9x9 conv 3->32, 3x3
    stride-2 convs to 64 and 128, five residual blocks, two nearest x2 upsample + 3x3 convs, 9x9
    conv 32->3 without norm or activation.

    Args:
        norm: ``"fused"`` (stylize_fast kernels), ``"instance"`` (plain PyTorch) or ``"batch"``.
        channels: width of the first layer (32); the others are 2x and 4x that.
        num_residual: number of residual blocks (5).
        padding_mode: ``"reflect"`` (examples) or ``"replicate"`` (texture_nets ``johnson.lua``).
        upsample: ``"nearest"`` (nearest x2 + conv) or ``"transpose"`` (transposed convolution,
            texture_nets ``johnson.lua``).
        final_kernel: kernel size of the last conv, 9 (examples) or 3 (``johnson.lua``).
        tanh_scale: if set, the output is ``tanh_scale * tanh(y)`` (Johnson's original Lua
            model uses 150); None for a linear output.
        in_channels, out_channels: image channels (3).
        channels_last: compute in the channels_last memory format (input and output keep their
            own layout). None (default): yes for ``norm="fused"`` on CPU, where the fused kernels
            are channels_last-native and the 3x3 convolutions run as Winograd (measured 0.4x the
            time of NCHW there); no otherwise. A runtime choice, not part of the architecture.
        styles: number of styles (1). Above 1 every instance norm is conditional (Dumoulin et
            al.): ``in*.weight`` / ``in*.bias`` hold one row per style, shape ``(styles, C)``,
            and the forward takes the style per sample. ``norm="batch"`` has no conditional form.

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H', W')`` with ``H' = H`` when H
    is a multiple of :attr:`multiple` (4); otherwise pad first (the inference engine does).
    ``model(x)`` for one style, ``model(x, style)`` with ``styles > 1``: ``style`` an integer
    tensor ``(N,)`` of style indices or a float tensor ``(N, styles)`` of mixing weights (see
    :func:`stylize_fast.nn.select_styles`). A batch mixing styles is still one kernel call per
    layer.
    """

    #: Height and width must be multiples of this for the output to keep the input's size.
    multiple = 4

    def __init__(
        self,
        norm: str = "fused",
        *,
        channels: int = 32,
        num_residual: int = 5,
        padding_mode: str = "reflect",
        upsample: str = "nearest",
        final_kernel: int = 9,
        tanh_scale: float | None = None,
        in_channels: int = 3,
        out_channels: int = 3,
        channels_last: bool | None = None,
        styles: int = 1,
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        check_choice(fn, "norm", norm, NORMS)
        check_choice(fn, "padding_mode", padding_mode, PADDING_MODES)
        check_choice(fn, "upsample", upsample, ("nearest", "transpose"))
        check_positive_int(fn, "channels", channels)
        check_positive_int(fn, "num_residual", num_residual, minimum=0)
        check_positive_int(fn, "in_channels", in_channels)
        check_positive_int(fn, "out_channels", out_channels)
        if final_kernel not in (1, 3, 5, 7, 9):
            raise ValueError(f"{fn}: final_kernel must be an odd int in 1..9, got {final_kernel!r}")
        check_channels_last(fn, channels_last)
        check_positive_int(fn, "styles", styles)
        if styles > 1 and norm == "batch":
            raise ValueError(f"{fn}: styles > 1 needs norm='instance' or 'fused' (conditional "
                             f"instance norm), not 'batch'")
        self.channels_last = channels_last
        if tanh_scale is not None and not (isinstance(tanh_scale, (int, float))
                                           and tanh_scale > 0):
            raise ValueError(f"{fn}: tanh_scale must be None or a positive number, "
                             f"got {tanh_scale!r}")
        self.options = dict(norm=norm, channels=channels, num_residual=num_residual,
                            padding_mode=padding_mode, upsample=upsample,
                            final_kernel=final_kernel,
                            tanh_scale=None if tanh_scale is None else float(tanh_scale),
                            in_channels=in_channels, out_channels=out_channels)
        if styles > 1:  # styles=1 leaves the options (and files) of single-style models as they were
            self.options["styles"] = styles
        self.styles = styles
        self.norm = norm
        self.tanh_scale = self.options["tanh_scale"]
        fused = norm == "fused"
        c1, c2, c3 = channels, 2 * channels, 4 * channels

        self.conv1 = ConvLayer(in_channels, c1, 9, 1, padding_mode, fused)
        self.in1, _ = make_norm(c1, norm, "relu", styles=styles)
        self.conv2 = ConvLayer(c1, c2, 3, 2, padding_mode, fused)
        self.in2, _ = make_norm(c2, norm, "relu", styles=styles)
        self.conv3 = ConvLayer(c2, c3, 3, 2, padding_mode, fused)
        self.in3, _ = make_norm(c3, norm, "relu", styles=styles)
        for i in range(1, num_residual + 1):
            self.add_module(f"res{i}", ResidualBlock(c3, norm, padding_mode, styles))
        self.deconv1 = UpsampleConvLayer(c3, c2, 3, 2, upsample, padding_mode, fused)
        self.in4, _ = make_norm(c2, norm, "relu", styles=styles)
        self.deconv2 = UpsampleConvLayer(c2, c1, 3, 2, upsample, padding_mode, fused)
        self.in5, _ = make_norm(c1, norm, "relu", styles=styles)
        self.deconv3 = ConvLayer(c1, out_channels, final_kernel, 1, padding_mode, fused)
        # One shared ReLU as in the examples; the fused norms apply it themselves.
        self.relu = nn.Identity() if fused else make_activation("relu")
        self.num_residual = num_residual

    def forward(self, x: torch.Tensor, style=None) -> torch.Tensor:
        """``(N, C, H, W)`` RGB 0-255 -> stylised ``(N, C_out, H, W)`` (for H, W multiples of 4),
        in the input's memory format. ``style``: None for a single-style model, else the
        style index ``(N,)`` or mixing weights ``(N, styles)`` per sample."""
        selection = resolve_style(type(self).__name__, self.styles, style, x.shape[0])
        compute_format, out_format = generator_layouts(x, self.channels_last, self.norm)
        if compute_format == torch.channels_last:
            x = x.contiguous(memory_format=compute_format)
        y = self._forward(x, selection)
        return y.contiguous(memory_format=out_format)

    def norm_on_load(self) -> bool:
        """Whether the forward normalises as the next convolution loads (nn.norm_on_load):
        fused norms and padded convolutions throughout, nearest upsampling, option on, no
        forward hooks (which need the layers called one by one)."""
        if self.norm != "fused" or self.options["upsample"] != "nearest" or not nol.enabled() \
                or nol.hooked(self):
            return False
        norms = [m for name, m in self.named_modules() if name.split(".")[-1].startswith("in")]
        convs = [m for m in self.modules() if isinstance(m, (PaddedConv2d, nn.Conv2d))]
        return all(nol.norm_supported(m) for m in norms) and all(
            nol.conv_supported(m) for m in convs)

    def _forward(self, x: torch.Tensor, style=None) -> torch.Tensor:
        if self.norm_on_load():
            return self._forward_norm_on_load(x, style)
        y = self.relu(apply_norm(self.in1, self.conv1(x), style))
        y = self.relu(apply_norm(self.in2, self.conv2(y), style))
        y = self.relu(apply_norm(self.in3, self.conv3(y), style))
        for i in range(1, self.num_residual + 1):
            y = getattr(self, f"res{i}")(y, style)
        y = self.relu(apply_norm(self.in4, self.deconv1(y), style))
        y = self.relu(apply_norm(self.in5, self.deconv2(y), style))
        y = self.deconv3(y)
        if self.tanh_scale is not None:
            y = torch.tanh(y) * self.tanh_scale
        return y

    def _forward_norm_on_load(self, x: torch.Tensor, style=None) -> torch.Tensor:
        # No normalised activation is stored except where a residual sum needs it (in3 and
        # each block's in2): every other norm is applied by the next convolution's loads.
        h, mean, rstd = nol.conv(self.conv1.conv2d, x, stats_eps=self.in1.eps)
        h, mean, rstd = nol.conv(self.conv2.conv2d, nol.pending(self.in1, h, mean, rstd, style),
                                 stats_eps=self.in2.eps)
        h, mean, rstd = nol.conv(self.conv3.conv2d, nol.pending(self.in2, h, mean, rstd, style),
                                 stats_eps=self.in3.eps)
        y = nol.normalize(self.in3, h, mean, rstd, style)
        for i in range(1, self.num_residual + 1):
            y = getattr(self, f"res{i}").forward_norm_on_load(y, style)
        h, mean, rstd = nol.conv(self.deconv1.conv2d, y, stats_eps=self.in4.eps)
        del y  # not needed past here: the peak is deconv2's input and output alone
        h, mean, rstd = nol.conv(self.deconv2.conv2d,
                                 nol.pending(self.in4, h, mean, rstd, style),
                                 stats_eps=self.in5.eps)
        y = nol.conv(self.deconv3.conv2d, nol.pending(self.in5, h, mean, rstd, style))
        if self.tanh_scale is not None:
            y = torch.tanh(y) * self.tanh_scale
        return y

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
