"""Normalize-on-load convolution: ``norm_conv2d`` takes the *raw* output of the previous layer
with that tensor's instance-norm statistics, and applies the norm, its affine, its activation,
nearest upsampling and the padding as the convolution reads its input -- the normalised,
upsampled and padded tensors never exist. Its epilogue can add a residual and return the
instance-norm statistics of its own output (the next layer's norm), so a chain conv -> IN -> act
-> [upsample] -> conv -> IN -> ... moves each activation through memory once.

Argument checks, autograd and fake registration, and the per-backend implementation table live
here. Kernels: csrc/cpu/norm_conv_cpu.cpp (cpu: Winograd and direct kernels read through the
norm; other geometries build the padded normalised input once), csrc/cuda (cuda),
stylize_fast/ops/norm_conv_triton.py (triton); the reference in norm_conv_reference.py.
Every backend implements the internal signature

    fwd(input, scale, shift, input_activation, negative_slope, weight, bias, stride, padding,
        padding_mode, activation, upsample, residual, stats_eps) -> (output, mean, rstd)

``scale`` / ``shift``: ``(N, C)`` contiguous in the statistics dtype (or both None: a plain
convolution), the on-load map being ``act_in(x * scale + shift)``; zero padding stays zero (it
pads the normalised tensor). ``stats_eps < 0``: no statistics (mean, rstd are empty ``(0,)``).

The op's backward recomputes the normalised input (training materialises it once, as the
unfused layers do) and reuses the padded convolution's backward; the statistics outputs are not
differentiable -- training takes them from :func:`instance_norm_stats`, which is.
"""

from __future__ import annotations

import numbers

import torch

from .. import _extension, backends
from . import norm_conv_reference as reference
from . import padded_conv
from .common import (
    Activation,
    activation_code,
    output_memory_format,
    stats_dtype,
    unsupported_dtype,
)

OP = "norm_conv2d"
STATS_OP = "instance_norm_stats"
APPLY_OP = "instance_norm_apply"


def _check_eps(value, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{fn}: {name} must be a non-negative number, got {value!r}")
    return float(value)


def _check_stats_tensor(t, name: str, input: torch.Tensor, fn: str, *,
                        per_channel_ok: bool) -> torch.Tensor:
    n, c = input.shape[:2]
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device != input.device:
        raise ValueError(f"{fn}: {name} is on {t.device} but input is on {input.device}; all "
                         "tensors must be on the same device")
    if not t.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got {t.dtype}")
    shapes = ((n, c), (c,)) if per_channel_ok else ((n, c),)
    if tuple(t.shape) not in shapes:
        expected = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{fn}: {name} must have shape {expected} (input is {tuple(input.shape)}"
                         f"), got {tuple(t.shape)}")
    return t.to(stats_dtype(input.dtype))


def norm_scale_shift(input: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                     norm_weight: torch.Tensor | None, norm_bias: torch.Tensor | None,
                     fn: str = "norm_conv2d") -> tuple[torch.Tensor, torch.Tensor]:
    """The on-load map's per-(n, c) ``scale = rstd * weight`` and ``shift = bias - mean * scale``
    (shape ``(N, C)``, statistics dtype, contiguous); differentiable in all four."""
    mean = _check_stats_tensor(mean, "mean", input, fn, per_channel_ok=False)
    rstd = _check_stats_tensor(rstd, "rstd", input, fn, per_channel_ok=False)
    scale = rstd
    if norm_weight is not None:
        scale = scale * _check_stats_tensor(norm_weight, "norm_weight", input, fn,
                                            per_channel_ok=True)
    shift = -mean * scale
    if norm_bias is not None:
        shift = shift + _check_stats_tensor(norm_bias, "norm_bias", input, fn,
                                            per_channel_ok=True)
    return scale.contiguous(), shift.contiguous()


def check_args(input, weight, bias, stride, padding, padding_mode, *, activation, upsample,
               norm_activation, negative_slope, has_norm: bool, residual, stats_eps,
               fn: str = "norm_conv2d"):
    """Validate the public arguments; return (stride, padding, mode code, activation code,
    norm activation code, negative_slope, upsample, stats_eps as a float, -1 for none)."""
    upsample = padded_conv.check_upsample(upsample, fn=fn)
    stride, padding, code = padded_conv.check_args(input, weight, bias, stride, padding,
                                                   padding_mode, fn=fn, upsample=upsample)
    if upsample > 1 and stride != (1, 1):
        raise ValueError(f"{fn}: upsample={upsample} needs stride 1 (an upsampling followed by a "
                         f"strided convolution reads only some of the repeated pixels; upsample "
                         f"less instead), got stride {stride}")
    act = padded_conv.check_activation(activation, fn=fn)
    try:
        in_act = activation_code(norm_activation)
    except ValueError:
        raise ValueError(f"{fn}: norm_activation must be None, 'relu' or 'leaky_relu', got "
                         f"{norm_activation!r}") from None
    if in_act != Activation.NONE and not has_norm:
        raise ValueError(f"{fn}: norm_activation={norm_activation!r} needs the statistics (mean "
                         "and rstd) of the input's norm")
    if type(negative_slope) is not float and (
            isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real)):
        raise TypeError(f"{fn}: negative_slope must be a number, got {negative_slope!r}")
    if residual is not None:
        shape = padded_conv.output_shape(input, weight, stride, padding, upsample)
        if not isinstance(residual, torch.Tensor):
            raise TypeError(f"{fn}: residual must be a torch.Tensor or None, got "
                            f"{type(residual).__name__}")
        if tuple(residual.shape) != shape:
            raise ValueError(f"{fn}: residual must have the output's shape {shape}, got "
                             f"{tuple(residual.shape)}")
        if residual.dtype != input.dtype or residual.device != input.device:
            raise TypeError(f"{fn}: residual must have the input's dtype and device "
                            f"({input.dtype}, {input.device}), got ({residual.dtype}, "
                            f"{residual.device})")
    eps = -1.0 if stats_eps is None else _check_eps(stats_eps, "stats_eps", fn)
    return stride, padding, code, act, in_act, float(negative_slope), upsample, eps


def norm_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    padding_mode: str = "reflect",
    *,
    mean: torch.Tensor | None = None,
    rstd: torch.Tensor | None = None,
    norm_weight: torch.Tensor | None = None,
    norm_bias: torch.Tensor | None = None,
    norm_activation: str | None = None,
    negative_slope: float = 0.01,
    activation: str | None = None,
    upsample: int = 1,
    residual: torch.Tensor | None = None,
    stats_eps: float | None = None,
):
    """A convolution that normalises its input as it reads it:

    ``out = act(conv2d(pad(up(norm_act((input - mean) * rstd * norm_weight + norm_bias)))) + bias
    + residual)``

    the same as an instance-norm layer (statistics ``mean``, ``rstd`` of ``input``), its
    activation, ``F.interpolate(scale_factor=upsample)`` and :func:`padded_conv2d`, without
    building the normalised, upsampled or padded tensors.

    Args:
        input: raw ``(N, C, H, W)`` (the previous convolution's output), any memory format.
        weight, bias, stride, padding, padding_mode: as :func:`padded_conv2d` (the padding pads
            the normalised, upsampled tensor: zero padding is zero after the norm).
        mean, rstd: ``(N, C)`` statistics of ``input`` (from :func:`instance_norm_stats` or a
            previous ``norm_conv2d(stats_eps=...)``), or both None for a plain convolution.
        norm_weight, norm_bias: the norm's affine, ``(C,)`` or per sample ``(N, C)``, or None.
        norm_activation: None, ``"relu"`` or ``"leaky_relu"`` (``negative_slope``), applied
            after the norm's affine.
        activation: None or ``"relu"``, applied to the output after the residual.
        upsample: nearest upsampling factor of the normalised input (stride must be 1).
        residual: tensor of the output's shape added before ``activation``, or None.
        stats_eps: if given, also return the output's instance-norm ``mean`` and
            ``rstd = 1 / sqrt(var + stats_eps)`` (``(N, O)``, statistics dtype; not
            differentiable).

    Returns:
        the output (input's memory format), or ``(output, mean, rstd)`` with ``stats_eps``.
        Differentiable in input, mean, rstd, the affines, weight, bias and residual.
    """
    fn = "norm_conv2d"
    if isinstance(input, torch.Tensor) and torch.is_autocast_enabled(input.device.type):
        dtype = torch.get_autocast_dtype(input.device.type)
        input, weight = input.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if isinstance(bias, torch.Tensor) else bias
        residual = residual.to(dtype) if isinstance(residual, torch.Tensor) else residual
    if (mean is None) != (rstd is None):
        raise ValueError(f"{fn}: give both mean and rstd (the input's statistics) or neither")
    if mean is None and (norm_weight is not None or norm_bias is not None):
        raise ValueError(f"{fn}: norm_weight / norm_bias need the input's statistics (mean and "
                         "rstd)")
    stride, padding, code, act, in_act, slope, upsample, eps = check_args(
        input, weight, bias, stride, padding, padding_mode, activation=activation,
        upsample=upsample, norm_activation=norm_activation, negative_slope=negative_slope,
        has_norm=mean is not None, residual=residual, stats_eps=stats_eps, fn=fn)
    scale = shift = None
    if mean is not None:
        scale, shift = norm_scale_shift(input, mean, rstd, norm_weight, norm_bias, fn)
    out, out_mean, out_rstd = norm_conv2d_checked(input, scale, shift, in_act, slope, weight,
                                                  bias, stride, padding, code, act, upsample,
                                                  residual, eps)
    return out if stats_eps is None else (out, out_mean, out_rstd)


def norm_conv2d_checked(input, scale, shift, input_activation, negative_slope, weight, bias,
                        stride, padding, padding_mode, activation, upsample, residual,
                        stats_eps):
    """Run the selected backend on checked arguments."""
    if input.numel() == 0:
        return reference.norm_conv2d_forward(input, scale, shift, input_activation,
                                             negative_slope, weight, bias, stride, padding,
                                             padding_mode, activation, upsample, residual,
                                             stats_eps)
    _, fn = backends.select(OP, input, weight, bias, stride, padding, padding_mode, upsample)
    return fn(input, scale, shift, int(input_activation), float(negative_slope), weight, bias,
              list(stride), list(padding), int(padding_mode), int(activation), int(upsample),
              residual, float(stats_eps))


def instance_norm_stats(input: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) ``mean`` and ``rstd = 1 / sqrt(var + eps)`` of ``input`` (biased variance, as
    ``nn.InstanceNorm2d``), ``(N, C)`` in the statistics dtype (float32, float64 for float64):
    the statistics :func:`norm_conv2d` consumes. One read of the input; differentiable."""
    fn = "instance_norm_stats"
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{fn}: input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4 or not input.is_floating_point():
        raise ValueError(f"{fn}: input must be a floating-point (N, C, H, W) tensor, got "
                         f"{input.dtype} of shape {tuple(input.shape)}")
    eps = _check_eps(eps, "eps", fn)
    if input.numel() == 0:
        return reference.instance_norm_stats_forward(input, eps)
    _, impl = backends.select(STATS_OP, input)
    return impl(input, eps)


def instance_norm_apply(input: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                        activation: int = Activation.NONE, negative_slope: float = 0.01,
                        residual: torch.Tensor | None = None) -> torch.Tensor:
    """``act(input * scale + shift) + residual`` with per-(n, c) ``scale`` / ``shift`` (as
    :func:`norm_scale_shift` makes them) in one pass: an instance norm whose statistics are
    already known (from a ``norm_conv2d`` epilogue). Inference only (not differentiable on the
    compiled backend; autograd users take the norm layer itself)."""
    fn = "instance_norm_apply"
    if not isinstance(input, torch.Tensor) or input.dim() != 4:
        raise ValueError(f"{fn}: input must be an (N, C, H, W) tensor")
    scale = _check_stats_tensor(scale, "scale", input, fn, per_channel_ok=False).contiguous()
    shift = _check_stats_tensor(shift, "shift", input, fn, per_channel_ok=False).contiguous()
    if residual is not None and (tuple(residual.shape) != tuple(input.shape)
                                 or residual.dtype != input.dtype):
        raise ValueError(f"{fn}: residual must have the input's shape {tuple(input.shape)} and "
                         f"dtype {input.dtype}")
    if input.numel() == 0:
        return _reference_apply(input, scale, shift, int(activation), float(negative_slope),
                                residual)
    _, impl = backends.select(APPLY_OP, input)
    return impl(input, scale, shift, int(activation), float(negative_slope), residual)


def _reference_apply(input, scale, shift, activation, negative_slope, residual):
    out = reference.normalize(input, scale, shift, activation, negative_slope)
    out = out if residual is None else out + residual
    return out.contiguous(memory_format=output_memory_format(input))


# --------------------------------------------------------------------------------------------
# Autograd + fake registration, shared by the compiled ops and the Triton ops.


def _activation_grad(t: torch.Tensor, code: int, negative_slope: float) -> torch.Tensor | float:
    if code == Activation.RELU:
        return (t > 0).to(t.dtype)
    if code == Activation.LEAKY_RELU:
        return torch.where(t > 0, 1.0, negative_slope).to(t.dtype)
    return 1.0


def register_autograd(fwd_op, conv_bwd) -> None:
    """Make ``fwd_op`` (the internal signature above) differentiable. ``conv_bwd`` is the
    padded convolution's backward of the same backend (schema of padded_conv2d_bwd), run on the
    normalised input, which the backward rebuilds from the saved raw input and (scale, shift).
    Saves input, scale, shift, weight, and with an activation the output (its mask)."""

    def setup_context(ctx, inputs, output):
        (input, scale, shift, in_act, slope, weight, bias, stride, padding, mode, act, up,
         residual, _eps) = inputs
        out, mean, rstd = output
        ctx.mark_non_differentiable(mean, rstd)
        ctx.save_for_backward(input, scale, shift, weight, out if act else None)
        ctx.args = (in_act, slope, stride, padding, mode, act, up)
        ctx.has_bias, ctx.has_residual = bias is not None, residual is not None

    def backward(ctx, grad_out, _grad_mean, _grad_rstd):
        input, scale, shift, weight, out = ctx.saved_tensors
        in_act, slope, stride, padding, mode, act, up = ctx.args
        need = ctx.needs_input_grad
        g = grad_out if out is None else grad_out * (out > 0).to(grad_out.dtype)
        z = reference.normalize(input, scale, shift, in_act, slope)
        want_z = need[0] or (scale is not None and (need[1] or need[2]))
        mask = [want_z, need[5], ctx.has_bias and need[6]]
        gz, gw, gb = conv_bwd(g.contiguous(memory_format=output_memory_format(g)), z, weight,
                              stride, padding, mode, mask, None, 0, up)
        grad_input = grad_scale = grad_shift = None
        if want_z and scale is not None:
            n, c = input.shape[:2]
            x = input.to(scale.dtype)
            t = x * scale.reshape(n, c, 1, 1) + shift.reshape(n, c, 1, 1)
            gt = gz.to(scale.dtype) * _activation_grad(t, in_act, slope)
            if need[0]:
                grad_input = (gt * scale.reshape(n, c, 1, 1)).to(input.dtype)
            if need[1]:
                grad_scale = (gt * x).sum((2, 3))
            if need[2]:
                grad_shift = gt.sum((2, 3))
        elif want_z:
            grad_input = gz
        grad_residual = g if ctx.has_residual and need[12] else None
        return (grad_input, grad_scale, grad_shift, None, None, gw if mask[1] else None,
                gb if mask[2] else None, None, None, None, None, None, grad_residual, None)

    torch.library.register_autograd(fwd_op, backward, setup_context=setup_context)


def fake_forward(input, scale, shift, input_activation, negative_slope, weight, bias, stride,
                 padding, padding_mode, activation, upsample, residual, stats_eps):
    out = torch.empty(padded_conv.output_shape(input, weight, stride, padding, upsample),
                      dtype=input.dtype, device=input.device,
                      memory_format=output_memory_format(input))
    acc = stats_dtype(input.dtype)
    shape = (input.shape[0], weight.shape[0]) if stats_eps >= 0 else (0,)
    return out, input.new_empty(shape, dtype=acc), input.new_empty(shape, dtype=acc)


def register_stats_autograd(stats_op) -> None:
    """Autograd of an ``(input, eps) -> (mean, rstd)`` op: d mean / dx = 1 / HW,
    d rstd / dx = -rstd^3 (x - mean) / HW."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], *output)

    def backward(ctx, grad_mean, grad_rstd):
        input, mean, rstd = ctx.saved_tensors
        n, c, h, w = input.shape
        hw = h * w
        x = input.to(mean.dtype)
        gm = grad_mean.reshape(n, c, 1, 1) / hw
        gr = (grad_rstd * -rstd.pow(3)).reshape(n, c, 1, 1) / hw
        grad = gm + gr * (x - mean.reshape(n, c, 1, 1))
        return grad.to(input.dtype), None

    torch.library.register_autograd(stats_op, backward, setup_context=setup_context)


def fake_stats(input, eps):
    acc = stats_dtype(input.dtype)
    return (input.new_empty(input.shape[:2], dtype=acc),
            input.new_empty(input.shape[:2], dtype=acc))


def _unsupported(input, weight, bias, stride, padding, mode, upsample) -> str | None:
    return unsupported_dtype(input)


def fake_apply(input, scale, shift, activation, negative_slope, residual):
    return torch.empty_like(input, memory_format=output_memory_format(input))


def _register_compiled_ops() -> None:
    if not _extension.loaded():
        return
    ops = torch.ops.stylize_fast
    for backend, key in (("cpu", "CPU"), ("cuda", "CUDA")):
        if _extension.has_kernel("norm_conv2d_fwd", key):
            backends.register(OP, backend, ops.norm_conv2d_fwd, devices=(backend,),
                              supports=_unsupported)
        if _extension.has_kernel("instance_norm_apply", key):
            backends.register(APPLY_OP, backend, ops.instance_norm_apply, devices=(backend,),
                              supports=unsupported_dtype)
        if _extension.has_kernel("instance_norm_stats", key):
            backends.register(STATS_OP, backend, ops.instance_norm_stats, devices=(backend,),
                              supports=unsupported_dtype)
    if _extension.has_kernel("norm_conv2d_fwd", "CPU") or \
            _extension.has_kernel("norm_conv2d_fwd", "CUDA"):
        torch.library.register_fake("stylize_fast::norm_conv2d_fwd")(fake_forward)
        register_autograd("stylize_fast::norm_conv2d_fwd", ops.padded_conv2d_bwd)
    if _extension.has_kernel("instance_norm_apply", "CPU"):
        torch.library.register_fake("stylize_fast::instance_norm_apply")(fake_apply)
    if _extension.has_kernel("instance_norm_stats", "CPU") or \
            _extension.has_kernel("instance_norm_stats", "CUDA"):
        torch.library.register_fake("stylize_fast::instance_norm_stats")(fake_stats)
        register_stats_autograd("stylize_fast::instance_norm_stats")


backends.register(OP, "reference", reference.norm_conv2d_forward, devices=None)
backends.register(STATS_OP, "reference", reference.instance_norm_stats_forward, devices=None)
backends.register(APPLY_OP, "reference", _reference_apply, devices=None)
_register_compiled_ops()
