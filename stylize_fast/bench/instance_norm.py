"""Instance norm + ReLU providers: ours per backend against what a user would write instead."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import compiled, copy_provider, module_step, sf_backends, skipped
from .suite import Case, Prepared, Provider

OP = "instance_norm"
BASELINE = "InstanceNorm2d+ReLU"


class GroupNormReLU(nn.Module):
    """``F.group_norm(x, C)`` + ReLU: instance norm expressed as group norm (one group per
    channel), which PyTorch implements natively for channels_last."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.group_norm(x, x.shape[1], self.weight, self.bias, 1e-5))


def _affine_init(m: nn.Module) -> nn.Module:
    # Non-trivial affine parameters so no provider gets to skip the scale/shift.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return m


def _module_provider(case: Case, device: str, name: str, backend: str, factory, *,
                     sf_backend: str | None = None, compile: bool = False,
                     baseline: bool = False, train: bool = True) -> Provider:
    def build() -> Prepared:
        m = _affine_init(factory()).to(device=device, dtype=case.torch_dtype)
        m.train(train)
        if compile:
            m = compiled(m)
        return module_step(case, m, device, backend=sf_backend)

    return Provider(name, backend, build, baseline=baseline, compiled=compile)


def providers(case: Case, device: str, *, compile: bool = False) -> list[Provider]:
    """Every instance-norm+ReLU provider for ``case`` (input (N, C, H, W))."""
    c = case.shape[1]
    out: list[Provider] = []
    for backend, reason in sf_backends(OP, device):
        name = f"sf-{backend}"
        if reason:
            out.append(skipped(name, backend, reason))
            continue

        def factory(c=c):
            from ..nn import FusedInstanceNorm2d

            return FusedInstanceNorm2d(c, affine=True, activation="relu")

        out.append(_module_provider(case, device, name, backend, factory, sf_backend=backend))
    eager = lambda: nn.Sequential(nn.InstanceNorm2d(c, affine=True), nn.ReLU())
    out.append(_module_provider(case, device, BASELINE, "torch", eager, baseline=True))
    out.append(_module_provider(case, device, "group_norm+ReLU", "torch",
                                lambda: GroupNormReLU(c)))
    for train in (True, False):
        out.append(_module_provider(
            case, device, f"BatchNorm2d-{'train' if train else 'eval'}+ReLU", "torch",
            lambda: nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()), train=train))
    if compile:
        out.append(_module_provider(case, device, f"compiled {BASELINE}", "inductor", eager,
                                    compile=True))
    out.append(copy_provider(case, device))
    return out


def traffic_bytes(case: Case) -> int:
    """Bytes an ideal kernel moves: read x, write y (forward); plus read x and dy, write dx
    (backward). Statistics and parameters are negligible."""
    unit = case.numel * case.torch_dtype.itemsize
    return unit * (5 if case.mode == "forward+backward" else 2)


def flop_count(case: Case) -> int | None:
    return None
