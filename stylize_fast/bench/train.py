"""Training-step providers: one step of perceptual-loss training (generator forward, VGG-16 loss
with the PyTorch examples' preset, backward, Adam) with the package's configuration against the
plain eager one.

The baseline ("examples") is the PyTorch examples' configuration: the generator with
``nn.InstanceNorm2d`` (``norm="instance"``), the loss network as eager ``nn.Conv2d`` layers,
float32, NCHW. Ours ("sf fused") is what ``stylize-fast train`` runs by default: the fused
generator and the loss network on the package's kernels, channels_last. A case's ``dtype`` is the
step's precision: ``bfloat16`` runs the step under bfloat16 autocast (float32 weights and optimizer
state), for ours and for an eager ``examples + autocast`` provider; the baseline stays the
float32 examples step. ``arch`` is the generator (``johnson`` or ``texture``). The loss network has
random weights (``vgg_weights="random"``): the same arithmetic as the trained VGG-16, without a
download.

The profile split of a step (``--ops train`` writes it to ``profile.csv``) is measured by running
the step's phases one after another with wall-clock timing: data (the next batch in the step's
layout), generator forward + backward (its convolutions, norms and the rest, split by the
profiler's op categories), the loss network forward + backward down to the generator output,
and the optimizer.
"""

from __future__ import annotations

import functools
import time

import torch

from .suite import Case, Prepared, Provider
from .timing import Rotating

OP = "train"
BASELINE = "examples"
SPLIT_CATEGORIES = ("data", "generator conv", "generator norm", "generator other",
                    "loss network", "optimizer")


@functools.lru_cache(maxsize=4)
def _loss(image_size: int, device: str, eager: bool):
    from ..training.losses import PerceptualLoss, loss_config
    from ..training.vgg import VGGFeatures

    torch.manual_seed(0)
    cfg = loss_config("examples")
    layers = list(dict.fromkeys([*cfg.content_layers, *cfg.style_layers]))
    vgg = VGGFeatures(cfg.vgg, layers, kernels="eager" if eager else "package")
    loss_fn = PerceptualLoss(cfg, vgg=vgg).to(device)
    loss_fn.set_style(torch.rand(1, 3, image_size, image_size, device=device) * 255)
    return loss_fn


def _batches(case: Case, device: str, count: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.rand(case.shape, generator=gen) * 255).to(device) for _ in range(count)]


def _generator(arch: str, norm: str) -> torch.nn.Module:
    from ..models import JohnsonNet, TextureNet

    if arch not in ("johnson", "texture"):
        raise ValueError(f"train case: arch must be 'johnson' or 'texture', got {arch!r}")
    return (JohnsonNet if arch == "johnson" else TextureNet)(norm=norm)


def _provider(case: Case, device: str, name: str, ours: bool, amp: str | None,
              baseline: bool = False) -> Provider:
    # Ours: the configuration `stylize-fast train` runs by default (fused generator, package
    # loss network, channels_last); the others: the examples' eager configuration in NCHW.
    layout = torch.channels_last if ours else torch.contiguous_format

    def build() -> Prepared:
        from ..training.trainer import autocast_context

        torch.manual_seed(0)
        model = _generator(str(case.param("arch", "johnson")), "fused" if ours else "instance")
        model = model.to(device, memory_format=layout)
        loss_fn = _loss(case.shape[-1], device, not ours)
        # A tiny learning rate: the weights barely move, so every round times the same work.
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-12)
        rot = Rotating(_batches(case, device))

        def step():
            x = rot.next().contiguous(memory_format=layout)
            with autocast_context(torch.device(device), amp):
                terms = loss_fn(model(x), x)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            return terms["total"]

        def split() -> dict[str, float]:
            return _split(model, loss_fn, optimizer, rot, layout, device, amp)

        return Prepared(step, module=model, split=split)

    backend = _fused_backend(device) if ours else "torch"
    return Provider(name, backend, build, baseline=baseline)


def _sync(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def _split(model, loss_fn, optimizer, rot, layout, device: str, amp: str | None
           ) -> dict[str, float]:
    """Seconds per phase of one step, phases run one after another (module docstring)."""
    from torch.profiler import ProfilerActivity, profile

    from ..training.trainer import autocast_context
    from .generators import classify

    out = dict.fromkeys(SPLIT_CATEGORIES, 0.0)
    ctx = autocast_context(torch.device(device), amp)
    t0 = _sync(device)
    x = rot.next().contiguous(memory_format=layout)
    t1 = _sync(device)
    out["data"] = t1 - t0
    activities = [ProfilerActivity.CPU]
    with profile(activities=activities) as prof_forward:
        with ctx:
            y = model(x)
    t2 = _sync(device)
    y_leaf = y.detach().requires_grad_()
    with ctx:
        terms = loss_fn(y_leaf, x)
    (grad_y,) = torch.autograd.grad(terms["total"], y_leaf)
    t3 = _sync(device)
    optimizer.zero_grad(set_to_none=True)
    with profile(activities=activities) as prof_backward:
        y.backward(grad_y)
    t4 = _sync(device)
    optimizer.step()
    t5 = _sync(device)
    out["loss network"] = t3 - t2
    out["optimizer"] = t5 - t4
    generator_s = (t2 - t1) + (t4 - t3)
    # The generator's wall time, shared out in proportion to the profiler's self times.
    parts = {"conv": 0.0, "norm": 0.0, "other": 0.0}
    for prof in (prof_forward, prof_backward):
        for evt in prof.events():
            cat, node = None, evt
            while node is not None:
                cat = classify(node.name) or cat
                node = node.cpu_parent
            parts[cat if cat in ("conv", "norm") else "other"] += evt.self_cpu_time_total
    total = sum(parts.values()) or 1.0
    for key, value in parts.items():
        out[f"generator {key}"] = generator_s * value / total
    return out


def _fused_backend(device: str) -> str:
    from .generators import _fused_backend as backend

    return backend(device)


def providers(case: Case, device: str, *, compile: bool = False) -> list[Provider]:
    """The examples step (float32, the baseline), ours in the case's precision, and the examples
    step under autocast for a half-precision case. (No torch.compile provider: compiling a
    whole training step is out of this benchmark's scope.)"""
    amp = None if case.dtype == "float32" else case.dtype
    out = [_provider(case, device, BASELINE, False, None, baseline=True)]
    if amp is not None:
        out.append(_provider(case, device, f"{BASELINE} + {amp} autocast", False, amp))
    out.append(_provider(case, device, "sf fused", True, amp))
    return out


def traffic_bytes(case: Case) -> int:
    return 0  # not a bandwidth-bound op: no GB/s column


def flop_count(case: Case) -> int:
    return 0
