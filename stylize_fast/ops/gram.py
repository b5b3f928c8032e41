"""Gram matrix of bfloat16 features in float32, for the style loss under bfloat16 autocast.

``gram_bf16(F)`` is ``F F^T`` of ``(N, C, H, W)`` channels-last bfloat16 features as a float32
``(N, C, C)`` tensor, straight from the bfloat16 values: every product of two bfloat16 numbers is
exact in float32 and the sums are float32, so it is the float32 Gram of those features without
the float32 copy of every feature map (and, with AVX512-BF16, at twice the float32 rate).
``gram_bf16_backward(M, F)`` is ``M^T F`` in F's dtype and layout (M symmetric in use).

Kernels: csrc/cpu/gram_cpu.cpp (+ cpu/gram_cpu_kernels.h); CPU only. :func:`supported` says
whether a call can use them; the loss (training/losses.py) uses torch's float32 ``bmm`` otherwise.
"""

from __future__ import annotations

import torch

from .. import _extension

OPS = ("gram_bf16", "gram_bf16_backward")
# Resolved once at import: a plain constant, so code traced by torch.compile can read it.
_AVAILABLE: bool = _extension.has_kernel("gram_bf16", "CPU")


def available() -> bool:
    """Whether the compiled CPU kernels are loaded."""
    return _AVAILABLE


def supported(features: torch.Tensor) -> bool:
    """Whether :func:`gram` runs the compiled kernel for ``features``: CPU, bfloat16, 4-D,
    channels-last contiguous, and the extension loaded."""
    return (isinstance(features, torch.Tensor) and features.device.type == "cpu"
            and features.dtype == torch.bfloat16 and features.dim() == 4
            and features.is_contiguous(memory_format=torch.channels_last) and available())


class _GramBF16(torch.autograd.Function):
    """``scale * F F^T`` (float32) of bfloat16 features; backward ``scale (dG + dG^T) F`` in
    F's dtype and layout, one kernel each way."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(features)
        ctx.scale = scale
        return torch.ops.stylize_fast.gram_bf16(features).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (features,) = ctx.saved_tensors
        m = (grad + grad.transpose(1, 2)).mul_(ctx.scale).float().contiguous()
        return torch.ops.stylize_fast.gram_bf16_backward(m, features), None


def gram(features: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * F F^T`` as float32 ``(N, C, C)`` of channels-last bfloat16 ``(N, C, H, W)``
    features (see :func:`supported`), differentiable in ``features``."""
    if not supported(features):
        raise ValueError("gram: features must be a 4-D channels-last contiguous bfloat16 CPU "
                         "tensor and the compiled extension loaded, got "
                         f"{getattr(features, 'dtype', type(features).__name__)} of shape "
                         f"{tuple(getattr(features, 'shape', ()))}")
    return _GramBF16.apply(features, float(scale))


def _register_fakes() -> None:
    if not available():
        return

    @torch.library.register_fake("stylize_fast::gram_bf16")
    def _fake_gram(features):
        n, c = features.shape[:2]
        return features.new_empty((n, c, c), dtype=torch.float32)

    @torch.library.register_fake("stylize_fast::gram_bf16_backward")
    def _fake_gram_backward(m, features):
        return torch.empty_like(features, memory_format=torch.channels_last)


_register_fakes()
