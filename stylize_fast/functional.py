"""Functional interface: ``instance_norm`` (fused with an activation) and ``padded_conv2d``."""

from __future__ import annotations

import torch

from .ops import instance_norm as _instance_norm
from .ops import padded_conv as _padded_conv


def instance_norm(
    input: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    activation: str | None = None,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """Instance normalisation followed by an activation, in one kernel.

    Args:
        input: ``(N, C, H, W)``, float16 / bfloat16 / float32 / float64, any memory format
            (the output has the input's memory format).
        weight, bias: ``(C,)`` or per-sample ``(N, C)`` (conditional instance norm / AdaIN);
            either may be None.
        eps: added to the variance (>= 0).
        activation: None, ``"relu"`` or ``"leaky_relu"``.
        negative_slope: slope of ``"leaky_relu"`` for negative inputs.

    Returns:
        ``act((input - mean) / sqrt(var + eps) * weight + bias)`` with per-(n, c) mean and biased
        variance over H and W, computed in float32 (float64 for float64 input).
    """
    weight, bias, code = _instance_norm.check_args(
        input, weight, bias, eps, activation, negative_slope)
    return _instance_norm.instance_norm_with_stats(
        input, weight, bias, eps, code, negative_slope)[0]


def padded_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    padding_mode: str = "reflect",
    activation: str | None = None,
    upsample: int = 1,
) -> torch.Tensor:
    """``act(F.conv2d(F.pad(input, pad, padding_mode), weight, bias, stride))`` without building
    the padded tensor. ``padding_mode`` is ``"reflect"``, ``"replicate"`` or ``"zeros"``;
    ``activation`` None or ``"relu"``, applied in the convolution kernel's output store (its
    backward needs only the output's sign); ``upsample`` an int >= 1, nearest upsampling of the
    input before the padding (``F.interpolate(input, scale_factor=upsample)``), folded into the
    CPU Winograd kernel's input read (see ``stylize_fast.ops.padded_conv.padded_conv2d``)."""
    return _padded_conv.padded_conv2d(input, weight, bias, stride, padding, padding_mode,
                                      activation, upsample)
