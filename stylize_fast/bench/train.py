"""Training-step providers: one step of perceptual-loss training (generator forward, VGG-16 loss
with the PyTorch examples' preset, backward, Adam) with the package's fused JohnsonNet against
the PyTorch examples' configuration (the plain ``norm="instance"`` model, eager float32).

A case's ``dtype`` is the step's precision: ``bfloat16`` runs the step under bfloat16 autocast
(float32 weights and optimizer state), for ours and for an eager ``examples + autocast``
provider; the baseline stays the float32 examples step. ``layout`` ``channels_last`` feeds the
batch in that layout. The loss network has random weights (``vgg_weights="random"``): the same
arithmetic as the trained VGG-16, without a download.
"""

from __future__ import annotations

import functools

import torch

from .suite import Case, Prepared, Provider
from .timing import Rotating

OP = "train"
BASELINE = "examples"


@functools.lru_cache(maxsize=2)
def _loss(image_size: int, device: str):
    from ..training.losses import PerceptualLoss, loss_config

    torch.manual_seed(0)
    loss_fn = PerceptualLoss(loss_config("examples"), vgg_weights="random").to(device)
    loss_fn.set_style(torch.rand(1, 3, image_size, image_size, device=device) * 255)
    return loss_fn


def _batches(case: Case, device: str, count: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.rand(case.shape, generator=gen) * 255).to(device)
            .contiguous(memory_format=case.memory_format) for _ in range(count)]


def _provider(case: Case, device: str, name: str, norm: str, amp: str | None,
              baseline: bool = False) -> Provider:
    def build() -> Prepared:
        from ..models import JohnsonNet
        from ..training.trainer import autocast_context

        torch.manual_seed(0)
        model = JohnsonNet(norm=norm).to(device)
        loss_fn = _loss(case.shape[-1], device)
        # A tiny learning rate: the weights barely move, so every round times the same work.
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-12)
        rot = Rotating(_batches(case, device))

        def step():
            x = rot.next()
            with autocast_context(torch.device(device), amp):
                terms = loss_fn(model(x), x)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            return terms["total"]

        return Prepared(step, module=model)

    return Provider(name, "torch" if norm != "fused" else _fused_backend(device), build,
                    baseline=baseline)


def _fused_backend(device: str) -> str:
    from .generators import _fused_backend as backend

    return backend(device)


def providers(case: Case, device: str, *, compile: bool = False) -> list[Provider]:
    """The examples step (float32, the baseline), ours in the case's precision, and the examples
    step under autocast for a half-precision case. (No torch.compile provider: compiling a
    whole training step is out of this benchmark's scope.)"""
    amp = None if case.dtype == "float32" else case.dtype
    out = [_provider(case, device, BASELINE, "instance", None, baseline=True)]
    if amp is not None:
        out.append(_provider(case, device, f"{BASELINE} + {amp} autocast", "instance", amp))
    out.append(_provider(case, device, "sf fused", "fused", amp))
    return out


def traffic_bytes(case: Case) -> int:
    return 0  # not a bandwidth-bound op: no GB/s column


def flop_count(case: Case) -> int:
    return 0
