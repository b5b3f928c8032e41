"""Plain-PyTorch reference for fused instance norm + activation.

It is the ground truth of every test (run in float64) and the fallback backend. Differentiable
through ordinary autograd; statistics are computed centred (torch.var_mean), never as
E[x^2] - E[x]^2.
"""

from __future__ import annotations

import torch

from .common import apply_activation, stats_dtype


def _per_channel(t: torch.Tensor | None, n: int, c: int) -> torch.Tensor | None:
    # (C,) or (N, C) -> broadcastable (1|N, C, 1, 1)
    if t is None:
        return None
    return t.reshape(n if t.dim() == 2 else 1, c, 1, 1)


def instance_norm_forward(
    input: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    activation: int,
    negative_slope: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (output, mean, rstd); mean/rstd of shape (N, C) in the statistics dtype."""
    n, c = input.shape[:2]
    acc = stats_dtype(input.dtype)
    x = input.to(acc)
    var, mean = torch.var_mean(x, dim=(2, 3), correction=0, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    y = (x - mean) * rstd
    w, b = _per_channel(weight, n, c), _per_channel(bias, n, c)
    if w is not None:
        y = y * w.to(acc)
    if b is not None:
        y = y + b.to(acc)
    y = apply_activation(y, activation, negative_slope).to(input.dtype)
    return y, mean.reshape(n, c).detach(), rstd.reshape(n, c).detach()


def instance_norm_eval(
    input: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    activation: int,
    negative_slope: float,
) -> torch.Tensor:
    """Normalise with running statistics (nn.InstanceNorm2d in eval mode with
    track_running_stats=True): a per-channel affine map, then the activation."""
    c = input.shape[1]
    acc = stats_dtype(input.dtype)
    scale = torch.rsqrt(running_var.to(acc) + eps)
    if weight is not None:
        scale = scale * weight.to(acc)
    shift = -running_mean.to(acc) * scale
    if bias is not None:
        shift = shift + bias.to(acc)
    y = input.to(acc) * scale.reshape(1, c, 1, 1) + shift.reshape(1, c, 1, 1)
    return apply_activation(y, activation, negative_slope).to(input.dtype)
