"""Plain-PyTorch reference for the normalize-on-load convolution (``norm_conv2d``) and for the
instance-norm statistics it consumes (``instance_norm_stats``).

It is the ground truth of every test (run in float64) and the fallback backend: it builds every
intermediate the kernels avoid (the normalised input, its upsampled and padded copies), then
``F.conv2d``. Differentiable through ordinary autograd.
"""

from __future__ import annotations

import torch

from . import padded_conv_reference
from .common import Activation, apply_activation, output_memory_format, stats_dtype


def instance_norm_stats_forward(input: torch.Tensor,
                                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) mean and ``1 / sqrt(var + eps)`` (biased variance, centred, as
    ``nn.InstanceNorm2d``), shape ``(N, C)``, in the statistics dtype."""
    var, mean = torch.var_mean(input.to(stats_dtype(input.dtype)), dim=(2, 3), correction=0)
    return mean, torch.rsqrt(var + eps)


def normalize(input: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None,
              activation: int, negative_slope: float) -> torch.Tensor:
    """``act(input * scale[n, c] + shift[n, c])`` computed in the statistics dtype and rounded to
    the input's dtype (what an instance-norm layer would store); ``input`` when scale is None."""
    if scale is None:
        return input
    n, c = input.shape[:2]
    z = input.to(scale.dtype) * scale.reshape(n, c, 1, 1) + shift.reshape(n, c, 1, 1)
    return apply_activation(z, activation, negative_slope).to(input.dtype)


def norm_conv2d_forward(
    input: torch.Tensor,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    input_activation: int,
    negative_slope: float,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    padding_mode: int,
    activation: int,
    upsample: int,
    residual: torch.Tensor | None,
    stats_eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``out = act(conv(pad(up(act_in(input * scale + shift)))) + bias + residual)``; returns
    ``(out, mean, rstd)``: the statistics of ``out`` when ``stats_eps >= 0``, else empty
    ``(0,)`` tensors."""
    x = normalize(input, scale, shift, input_activation, negative_slope)
    if upsample > 1:
        x = torch.nn.functional.interpolate(
            x, size=(x.shape[2] * upsample, x.shape[3] * upsample), mode="nearest")
    out = padded_conv_reference.padded_conv2d_forward(x, weight, bias, stride, padding,
                                                      padding_mode, Activation.NONE)
    if residual is not None:
        out = out + residual
    out = apply_activation(out, activation, 0.0)
    out = out.contiguous(memory_format=output_memory_format(input))
    acc = stats_dtype(input.dtype)
    if stats_eps >= 0:
        mean, rstd = instance_norm_stats_forward(out, stats_eps)
        return out, mean.detach(), rstd.detach()
    empty = input.new_empty((0,), dtype=acc)
    return out, empty, empty.clone()
