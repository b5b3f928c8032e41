"""Mean squared error of two bfloat16 tensors in float32, for the content loss under bfloat16
autocast.

``mse_bf16(a, b)`` is ``mean((a - b)^2)`` as a float32 scalar read straight from the bfloat16
values (their differences are exact in float32; sums in float32 lanes over fixed chunks, added
in double in order), and ``mse_bf16_backward(grad, a, b)`` is ``grad * 2 (a - b) / numel`` in
a's dtype and layout, rounded once. Without them the loss casts both feature maps to float32.

Kernels: csrc/cpu/mse_cpu.cpp (+ cpu/mse_cpu_kernels.h); CPU only. :func:`supported` says
whether a call can use them; the loss (training/losses.py) uses ``F.mse_loss`` in float32
otherwise.
"""

from __future__ import annotations

import torch

from .. import _extension

# Resolved once at import: a plain constant, so code traced by torch.compile can read it.
_AVAILABLE: bool = _extension.has_kernel("mse_bf16", "CPU")


def available() -> bool:
    """Whether the compiled CPU kernels are loaded."""
    return _AVAILABLE


def supported(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether :func:`mse` runs the compiled kernel: CPU bfloat16 tensors of one shape, both
    contiguous or both channels-last (the same strides), not empty, and the extension loaded."""
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
            and a.device.type == "cpu" and b.device.type == "cpu"
            and a.dtype == torch.bfloat16 and b.dtype == torch.bfloat16
            and a.shape == b.shape and a.numel() > 0 and a.stride() == b.stride()
            and (a.is_contiguous() or (a.dim() == 4 and a.is_contiguous(
                memory_format=torch.channels_last))) and available())


class _MseBF16(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return torch.ops.stylize_fast.mse_bf16(a, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        grad_a = torch.ops.stylize_fast.mse_bf16_backward(grad, a, b) \
            if ctx.needs_input_grad[0] else None
        grad_b = torch.ops.stylize_fast.mse_bf16_backward(grad, b, a) \
            if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``mean((a - b)^2)`` as a float32 scalar of bfloat16 ``a`` and ``b`` (see
    :func:`supported`), differentiable in both."""
    if not supported(a, b):
        raise ValueError("mse: a and b must be non-empty bfloat16 CPU tensors of one shape, "
                         "both contiguous or both channels-last, and the compiled extension "
                         "loaded; got "
                         f"{getattr(a, 'dtype', type(a).__name__)} {tuple(getattr(a, 'shape', ()))}"
                         f" and {getattr(b, 'dtype', type(b).__name__)} "
                         f"{tuple(getattr(b, 'shape', ()))}")
    return _MseBF16.apply(a, b)


def _register_fakes() -> None:
    if not available():
        return

    @torch.library.register_fake("stylize_fast::mse_bf16")
    def _fake_mse(a, b):
        return a.new_empty((), dtype=torch.float32)

    @torch.library.register_fake("stylize_fast::mse_bf16_backward")
    def _fake_mse_backward(grad, a, b):
        return torch.empty_like(a)


_register_fakes()
