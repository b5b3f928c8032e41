"""Inputs and parameters shared by the padded-convolution test files (ReLU epilogue, folded
upsampling): seeded, fan-in-scaled weights; zero-mean inputs; float64 leaves for the reference."""

from __future__ import annotations

import torch

from stylize_fast.testing import make_input


def conv_params(c, o, k, dtype=torch.float64, device="cpu", bias=True, seed=1):
    """Weight ``(o, c, k, k)`` scaled by the fan-in, and a bias ``(o,)`` (or None)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(o, c, k, k, generator=g, dtype=torch.float64) * (c * k * k) ** -0.5
    b = torch.randn(o, generator=g, dtype=torch.float64) * 0.3 if bias else None
    return w.to(device, dtype), (b.to(device, dtype) if bias else None)


def centred_input(shape, dtype=torch.float32, layout="contiguous", device="cpu", seed=3):
    """Mean zero: pre-activations of both signs, about half of them negative."""
    return make_input(shape, dtype, layout, device=device, mean=0.0, std=1.0,
                      generator=torch.Generator().manual_seed(seed))


def leaves64(*tensors):
    """Detached float64 copies requiring grad (None stays None)."""
    return [None if t is None else t.detach().double().requires_grad_() for t in tensors]
