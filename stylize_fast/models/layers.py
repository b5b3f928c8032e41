"""Building blocks shared by the generators, in three flavours chosen by ``norm``:

- ``"instance"``: plain PyTorch (``nn.ReflectionPad2d``/``nn.ReplicationPad2d`` + ``nn.Conv2d``,
  ``nn.InstanceNorm2d(affine=True)``, ``nn.ReLU``) -- the baseline, and what export uses;
- ``"fused"``: ``sf.PaddedConv2d`` (padding inside the convolution) and
  ``sf.FusedInstanceNorm2d(activation=...)`` (activation inside the norm);
- ``"batch"``: as ``"instance"`` with ``nn.BatchNorm2d``.

"instance" and "fused" produce the same ``state_dict`` keys, so weights move freely between them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.conditional_instance_norm import ConditionalInstanceNorm2d, select_styles
from ..nn.instance_norm import FusedInstanceNorm2d
from ..nn.padded_conv import PaddedConv2d

NORMS = ("batch", "instance", "fused")
PADDING_MODES = ("reflect", "replicate", "zeros")
ACTIVATIONS = ("relu", "leaky_relu")


def check_choice(fn: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {list(choices)}, got {value!r}")


def check_positive_int(fn: str, name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")


def check_channels_last(fn: str, value) -> None:
    if value not in (None, True, False):
        raise ValueError(f"{fn}: channels_last must be None, True or False, got {value!r}")


def generator_layouts(x: torch.Tensor, channels_last: bool | None,
                      norm: str) -> tuple[torch.memory_format, torch.memory_format]:
    """(layout a generator computes in, layout it returns) for input ``x``. ``channels_last``
    None: channels_last for ``norm="fused"`` on CPU, where the fused kernels are
    channels_last-native. The output keeps the input's layout."""
    # Not ops.common.output_memory_format: under the ONNX exporter's tracing its stride
    # arithmetic yields tensors, not a bool.
    out_format = (torch.channels_last if x.dim() == 4 and x.is_contiguous(
        memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format)
    if channels_last is None:
        channels_last = norm == "fused" and x.device.type == "cpu"
    return (torch.channels_last if channels_last else torch.contiguous_format), out_format


def make_padded_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int,
                     padding_mode: str, fused: bool) -> tuple[nn.Module, nn.Module]:
    """(pad, conv) pair computing ``conv(pad(x))`` with ``kernel_size // 2`` padding.

    Fused: pad is ``nn.Identity`` and conv is ``PaddedConv2d`` doing both. Plain: an explicit pad
    module followed by ``nn.Conv2d`` (the PyTorch examples' layout, keys ``conv2d.weight``)."""
    padding = kernel_size // 2
    if fused and padding > 0:
        return nn.Identity(), PaddedConv2d(in_channels, out_channels, kernel_size, stride=stride,
                                           padding=padding, padding_mode=padding_mode)
    if padding == 0:
        pad: nn.Module = nn.Identity()
    elif padding_mode == "reflect":
        pad = nn.ReflectionPad2d(padding)
    elif padding_mode == "replicate":
        pad = nn.ReplicationPad2d(padding)
    else:
        pad = nn.ZeroPad2d(padding)
    return pad, nn.Conv2d(in_channels, out_channels, kernel_size, stride)


def make_norm(num_features: int, norm: str, activation: str | None,
              negative_slope: float = 0.01, styles: int = 1) -> tuple[nn.Module, nn.Module]:
    """(norm, activation) pair; with ``norm="fused"`` the activation is inside the norm and the
    second module is ``nn.Identity``. Instance norms are affine, without running statistics;
    with ``styles > 1`` they are :class:`ConditionalInstanceNorm2d` (one affine row per style),
    called as ``norm(x, style)`` (see :func:`apply_norm`)."""
    if styles > 1:
        if norm == "batch":
            raise ValueError("styles > 1 needs norm='instance' or 'fused' (conditional instance "
                             "norm), not 'batch'")
        fused = norm == "fused"
        return (ConditionalInstanceNorm2d(num_features, styles, activation=activation if fused
                                          else None, negative_slope=negative_slope, fused=fused),
                nn.Identity() if fused else make_activation(activation, negative_slope))
    if norm == "fused":
        return (FusedInstanceNorm2d(num_features, affine=True, activation=activation,
                                    negative_slope=negative_slope), nn.Identity())
    layer: nn.Module = (nn.InstanceNorm2d(num_features, affine=True) if norm == "instance"
                        else nn.BatchNorm2d(num_features))
    return layer, make_activation(activation, negative_slope)


def apply_norm(norm: nn.Module, x: torch.Tensor, style) -> torch.Tensor:
    """``norm(x)``, or ``norm(x, style)`` for a conditional norm (``style`` is then a checked
    :class:`~stylize_fast.nn.conditional_instance_norm.StyleSelection`)."""
    if isinstance(norm, ConditionalInstanceNorm2d):
        return norm(x, style)
    return norm(x)


def resolve_style(fn: str, styles: int, style, batch: int):
    """The checked selection a conditional generator's forward passes to its layers (None for
    a single-style model, which takes no ``style``)."""
    if styles == 1:
        if style is not None:
            raise ValueError(f"{fn}: this is a single-style model; style must be None, got "
                             f"{style if not isinstance(style, torch.Tensor) else 'a tensor'}")
        return None
    if style is None:
        raise ValueError(f"{fn}: this model has {styles} styles: pass style, an index tensor (B,) "
                         f"or mixing weights (B, {styles})")
    return select_styles(style, styles, batch, f"{fn}: style")


def make_activation(activation: str | None, negative_slope: float = 0.01) -> nn.Module:
    if activation is None:
        return nn.Identity()
    if activation == "relu":
        return nn.ReLU()
    return nn.LeakyReLU(negative_slope)


class ConvLayer(nn.Module):
    """Padded convolution, output size ``ceil(size / stride)``: ``conv2d(pad(x))``.

    Keys as the PyTorch examples' ``ConvLayer``: ``conv2d.weight``, ``conv2d.bias``.
    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H', W')``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding_mode: str = "reflect", fused: bool = False) -> None:
        super().__init__()
        self.pad, self.conv2d = make_padded_conv(in_channels, out_channels, kernel_size, stride,
                                                 padding_mode, fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.pad(x))


class UpsampleConvLayer(nn.Module):
    """Doubling (or ``upsample``-fold) upsampling followed by a convolution.

    ``mode="nearest"``: nearest-neighbour interpolation then a padded convolution (the PyTorch
    examples' ``UpsampleConvLayer``; keys ``conv2d.*``); fused, one ``PaddedConv2d(upsample=...)``
    that folds the upsampling into the convolution's input read. ``mode="transpose"``: a transposed
    convolution with stride ``upsample`` (texture_nets ``johnson.lua``), output exactly
    ``upsample`` times the input size. Shapes: ``(N, C_in, H, W)`` -> ``(N, C_out, sH, sW)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, upsample: int = 2,
                 mode: str = "nearest", padding_mode: str = "reflect",
                 fused: bool = False) -> None:
        super().__init__()
        self.upsample = int(upsample)
        self.mode = mode
        if mode == "transpose":
            self.pad = nn.Identity()
            padding = kernel_size // 2
            self.conv2d: nn.Module = nn.ConvTranspose2d(
                in_channels, out_channels, kernel_size, stride=self.upsample, padding=padding,
                output_padding=self.upsample - 1 - (kernel_size - 1 - 2 * padding))
        else:
            self.pad, self.conv2d = make_padded_conv(in_channels, out_channels, kernel_size, 1,
                                                     padding_mode, fused)
            if isinstance(self.conv2d, PaddedConv2d):
                self.conv2d.upsample = self.upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transpose" or isinstance(self.conv2d, PaddedConv2d):
            return self.conv2d(x)
        if self.upsample > 1:
            x = F.interpolate(x, mode="nearest", scale_factor=float(self.upsample))
        return self.conv2d(self.pad(x))
