"""Fused instance norm + activation: argument checks, autograd and fake (meta) registration of
the compiled ops, and the per-backend implementation table.

Kernels live in: csrc/cpu/instance_norm_cpu.cpp (cpu), csrc/cuda/instance_norm_kernels.cu +
instance_norm_cuda.cpp (cuda),
stylize_fast/ops/instance_norm_triton.py (triton); the reference in instance_norm_reference.py.
Every backend implements the same internal signature

    fwd(input, weight, bias, eps, activation_code, negative_slope) -> (output, mean, rstd)

with weight/bias already validated, contiguous and in the statistics dtype (common.stats_dtype).
"""

from __future__ import annotations

import numbers

import torch

from .. import _extension, backends
from . import instance_norm_reference as reference
from .common import (
    FLOATING_DTYPES,
    Activation,
    activation_code,
    empty_output_like,
    stats_dtype,
    unsupported_dtype,
)

OP = "instance_norm"


def check_args(
    input: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    activation: str | None,
    negative_slope: float,
    *,
    fn: str = "instance_norm",
) -> tuple[torch.Tensor | None, torch.Tensor | None, Activation]:
    """Validate the public arguments; return (weight, bias, activation_code) ready for a kernel."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{fn}: input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        hint = " (for one unbatched image use input.unsqueeze(0))" if input.dim() == 3 else ""
        raise ValueError(f"{fn}: input must have 4 dimensions (N, C, H, W), got "
                         f"{input.dim()} with shape {tuple(input.shape)}{hint}")
    if input.dtype not in FLOATING_DTYPES:
        raise TypeError(f"{fn}: input must be a floating-point tensor (float16, bfloat16, float32 "
                        f"or float64), got {input.dtype}")
    # type() is float first: the abstract-class isinstance costs ~1 us per call.
    if type(eps) is not float and (isinstance(eps, bool) or not isinstance(eps, numbers.Real)) \
            or not eps >= 0:
        raise ValueError(f"{fn}: eps must be a non-negative number, got {eps!r}")
    if type(negative_slope) is not float and (
            isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real)):
        raise TypeError(f"{fn}: negative_slope must be a number, got {negative_slope!r}")
    code = activation_code(activation)
    n, c = input.shape[:2]
    acc = stats_dtype(input.dtype)
    checked = []
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            checked.append(None)
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.device != input.device:
            raise ValueError(f"{fn}: {name} is on {t.device} but input is on {input.device}; "
                             "all tensors must be on the same device")
        if not t.is_floating_point():
            raise TypeError(f"{fn}: {name} must be a floating-point tensor, got {t.dtype}")
        if tuple(t.shape) not in ((c,), (n, c)):
            raise ValueError(f"{fn}: {name} must have shape (C,) = ({c},) or per-sample (N, C) = "
                             f"({n}, {c}), got {tuple(t.shape)}")
        if t.dtype != acc:
            t = t.to(acc)
        checked.append(t if t.is_contiguous() else t.contiguous())
    return checked[0], checked[1], code


def instance_norm_with_stats(
    input: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    activation: int,
    negative_slope: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the selected backend on checked arguments; returns (output, mean, rstd)."""
    if input.numel() == 0:
        return reference.instance_norm_forward(input, weight, bias, eps, activation, negative_slope)
    _, fn = backends.select(OP, input, weight, bias)
    return fn(input, weight, bias, float(eps), int(activation), float(negative_slope))


# --------------------------------------------------------------------------------------------
# Autograd + fake registration, shared by the compiled ops and the Triton ops.


def register_autograd(fwd_op, bwd_op) -> None:
    """Make ``fwd_op`` (schema of instance_norm_fwd) differentiable via ``bwd_op`` (schema of
    instance_norm_bwd). The backward recomputes the activation mask from the saved input and
    statistics; the output is not saved. Used by the Triton ops; the compiled op has the same
    in C++ (csrc/autograd.cpp)."""

    def setup_context(ctx, inputs, output):
        input, weight, bias, _eps, activation, negative_slope = inputs
        _, mean, rstd = output
        ctx.mark_non_differentiable(mean, rstd)
        ctx.save_for_backward(input, weight, bias, mean, rstd)
        ctx.activation = activation
        ctx.negative_slope = negative_slope

    def backward(ctx, grad_output, _grad_mean, _grad_rstd):
        input, weight, bias, mean, rstd = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
                bias is not None and ctx.needs_input_grad[2]]
        grads = bwd_op(grad_output, input, weight, bias, mean, rstd, ctx.activation,
                       ctx.negative_slope, mask)
        return (*(g if m else None for g, m in zip(grads, mask)), None, None, None)

    torch.library.register_autograd(fwd_op, backward, setup_context=setup_context)


def fake_forward(input, weight, bias, eps, activation, negative_slope):
    n, c = input.shape[:2]
    acc = stats_dtype(input.dtype)
    return (empty_output_like(input), input.new_empty((n, c), dtype=acc),
            input.new_empty((n, c), dtype=acc))


def fake_backward(grad_output, input, weight, bias, mean, rstd, activation, negative_slope, mask):
    def grad_like(t, wanted):
        return torch.empty_like(t) if wanted and t is not None else input.new_empty((0,))

    grad_input = empty_output_like(input) if mask[0] else input.new_empty((0,))
    return grad_input, grad_like(weight, mask[1]), grad_like(bias, mask[2])


def _register_compiled_ops() -> None:
    if not _extension.loaded():
        return
    ops = torch.ops.stylize_fast
    torch.library.register_fake("stylize_fast::instance_norm_fwd")(fake_forward)
    torch.library.register_fake("stylize_fast::instance_norm_bwd")(fake_backward)
    # Autograd of the compiled op is registered in C++ (csrc/autograd.cpp, same semantics as
    # register_autograd below, without Python on every call).
    for backend, key in (("cpu", "CPU"), ("cuda", "CUDA")):
        if _extension.has_kernel("instance_norm_fwd", key):
            backends.register(OP, backend, ops.instance_norm_fwd, devices=(backend,),
                              supports=unsupported_dtype)


backends.register(OP, "reference", reference.instance_norm_forward, devices=None)
_register_compiled_ops()
