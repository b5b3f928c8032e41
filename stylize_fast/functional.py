"""Functional interface: ``instance_norm`` (fused with an activation) and ``padded_conv2d``."""

from __future__ import annotations

import torch

from .ops import instance_norm as _instance_norm
from .ops import norm_conv as _norm_conv
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


# Normalize-on-load: the convolution that applies the previous layer's instance norm (+ affine,
# activation, upsampling, padding) as it reads its raw input, and the statistics it consumes.
norm_conv2d = _norm_conv.norm_conv2d
instance_norm_stats = _norm_conv.instance_norm_stats


# --------------------------------------------------------------------------------------------
# Adaptive instance normalisation (Huang & Belongie 2017), on the fused instance norm.


def _check_features(fn: str, name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{fn}: {name} must have 4 dimensions (N, C, H, W), got {t.dim()} "
                         f"with shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{fn}: {name} must be a floating-point tensor, got {t.dtype}")
    if t.shape[2] * t.shape[3] == 0:
        raise ValueError(f"{fn}: {name} has no pixels (shape {tuple(t.shape)})")


def _check_style_stats(fn: str, content: torch.Tensor, mean: torch.Tensor,
                       std: torch.Tensor) -> None:
    n, c = content.shape[:2]
    for name, t in (("style_mean", mean), ("style_std", std)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{fn}: {name} must be a floating-point tensor, got {t.dtype}")
        if t.dim() != 2 or t.shape[1] != c or t.shape[0] not in (1, n):
            raise ValueError(f"{fn}: {name} must have shape (1, C) or (N, C) = (1 or {n}, {c}) "
                             f"for content features {tuple(content.shape)}, got {tuple(t.shape)}")
        if t.device != content.device:
            raise ValueError(f"{fn}: {name} is on {t.device} but content_features is on "
                             f"{content.device}")


def mean_std(features: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel statistics of ``features`` ``(N, C, H, W)`` over H and W.

    Returns ``(mean, std)``, each ``(N, C)`` in float32 (float64 for float64 input), with
    ``std = sqrt(biased variance + eps)``: the convention of :func:`instance_norm`. Differentiable;
    plain tensor ops only (mean of the centred squares), so it also traces for ONNX export."""
    _check_features("mean_std", "features", features)
    if not eps >= 0:
        raise ValueError(f"mean_std: eps must be a non-negative number, got {eps!r}")
    x = features.to(torch.float64 if features.dtype == torch.float64 else torch.float32)
    mean = x.mean(dim=(2, 3))
    var = (x - mean[:, :, None, None]).square().mean(dim=(2, 3))
    return mean, torch.sqrt(var + eps)


def adain_with_stats(content_features: torch.Tensor, style_mean: torch.Tensor,
                     style_std: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """AdaIN with precomputed style statistics: ``style_std * (x - mu(x)) / sigma(x) +
    style_mean``, one fused instance-norm call with per-sample affine parameters.

    Args:
        content_features: ``(N, C, H, W)``, any floating dtype and memory format.
        style_mean, style_std: ``(N, C)`` or ``(1, C)`` (broadcast over the batch), e.g. from
            :func:`mean_std`.
        eps: added to the content variance (>= 0).

    Returns:
        ``(N, C, H, W)`` in the content's dtype and memory format. Differentiable in all three
        tensors.
    """
    fn = "adain_with_stats"
    _check_features(fn, "content_features", content_features)
    _check_style_stats(fn, content_features, style_mean, style_std)
    n, c = content_features.shape[:2]
    # Per-sample (N, C) affine: the statistics of style k scale and shift content sample k.
    return instance_norm(content_features, weight=style_std.expand(n, c),
                         bias=style_mean.expand(n, c), eps=eps)


def adain(content_features: torch.Tensor, style_features: torch.Tensor,
          eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation (Huang & Belongie 2017):
    ``sigma(y) * (x - mu(x)) / sigma(x) + mu(y)`` with per-(n, c) statistics over H and W.

    Args:
        content_features: ``x``, ``(N, C, H, W)``.
        style_features: ``y``, ``(N, C, H', W')`` or ``(1, C, H', W')`` (one style for the whole
            batch); any spatial size.
        eps: added to both variances (``sigma = sqrt(var + eps)``, as :func:`mean_std`).

    Returns:
        ``(N, C, H, W)`` in the content's dtype and memory format; differentiable in both inputs.
    """
    fn = "adain"
    _check_features(fn, "content_features", content_features)
    _check_features(fn, "style_features", style_features)
    n, c = content_features.shape[:2]
    if style_features.shape[1] != c:
        raise ValueError(f"{fn}: style_features must have the content's {c} channels, got "
                         f"{style_features.shape[1]} (shape {tuple(style_features.shape)})")
    if style_features.shape[0] not in (1, n):
        raise ValueError(f"{fn}: style_features must have batch 1 or the content's batch {n}, "
                         f"got {style_features.shape[0]}")
    mean, std = mean_std(style_features, eps)
    return adain_with_stats(content_features, mean, std, eps)
