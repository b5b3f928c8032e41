"""Helpers shared by the providers: rotated inputs, one timed step per mode, the copy."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch
from torch import nn

from ..testing import make_input
from . import machine
from .suite import Case, Prepared, Provider, Skip
from .timing import Rotating, rotation_count


def input_count(case: Case, device: str, shape: tuple[int, ...] | None = None) -> int:
    shape = shape or case.shape
    nbytes = case.torch_dtype.itemsize
    for s in shape:
        nbytes *= s
    return rotation_count(nbytes, machine.cache_bytes(device))


@functools.lru_cache(maxsize=2)
def _random_input(case: Case, device: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    # One random tensor per case, shared by its providers (drawing random numbers costs far more
    # than copying them; the copies below are what keeps each call's input out of the cache).
    gen = torch.Generator().manual_seed(seed)
    return make_input(shape, case.torch_dtype, case.layout, device=device, generator=gen)


def make_inputs(case: Case, device: str, *, requires_grad: bool = False,
                shape: tuple[int, ...] | None = None, count: int | None = None,
                seed: int = 0) -> list[torch.Tensor]:
    """``count`` copies of one fresh random input, each at its own address (default: enough
    to exceed the cache twice, so no call finds its input cached)."""
    shape = tuple(shape or case.shape)
    count = count or input_count(case, device, shape)
    base = _random_input(case, device, shape, seed)
    return [base.clone(memory_format=case.memory_format).requires_grad_(requires_grad)
            for _ in range(count)]


def backend_context(backend: str | None) -> Callable[[], contextlib.AbstractContextManager]:
    if backend is None:
        return contextlib.nullcontext
    from .. import backends

    return lambda: backends.use(backend)


def module_step(case: Case, module: nn.Module, device: str, *, backend: str | None = None,
                extra: Callable[[], contextlib.AbstractContextManager] | None = None) -> Prepared:
    """Time ``module`` on rotated inputs in ``case.mode``:

    * ``inference``: under ``torch.no_grad()``;
    * ``forward``: input and parameters require grad, so the autograd graph is recorded;
    * ``forward+backward``: forward, then ``torch.autograd.grad`` of a fixed random upstream
      gradient with respect to the input and every parameter.
    """
    grad = case.mode != "inference"
    params = [p for p in module.parameters() if p.requires_grad] if grad else []
    inputs = make_inputs(case, device, requires_grad=grad)
    ctx = backend_context(backend)
    extra = extra or contextlib.nullcontext
    rot = Rotating(inputs)
    # Upstream gradients are made at the first call, from its output: no probe call here, so
    # a compiled module compiles inside its (separately reported) first timed call.
    grads: list[Rotating] = []

    def upstream(y: torch.Tensor) -> torch.Tensor:
        if not grads:
            gen = torch.Generator(device=y.device).manual_seed(3)
            grads.append(Rotating([
                torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=gen)
                .contiguous(memory_format=case.memory_format) for _ in range(2)]))
        return grads[0].next()

    if case.mode == "inference":
        def step():
            with torch.no_grad(), ctx(), extra():
                return module(rot.next())
    elif case.mode == "forward":
        def step():
            with ctx(), extra():
                return module(rot.next())
    else:
        def step():
            with ctx(), extra():
                x = rot.next()
                y = module(x)
                return torch.autograd.grad(y, [x, *params], upstream(y))
    return Prepared(step)


def copy_provider(case: Case, device: str, shape: tuple[int, ...] | None = None) -> Provider:
    """A same-size copy (read once, write once): the memory-bandwidth floor of the case."""

    def build() -> Prepared:
        inputs = make_inputs(case, device, shape=shape)
        rot = Rotating(inputs)
        return Prepared(lambda: rot.next().clone())

    return Provider("copy", "torch", build, is_copy=True)


def compiled(module: nn.Module) -> nn.Module:
    """``torch.compile`` with static shapes (one graph per case, as a deployed model would)."""
    try:
        import torch._inductor  # noqa: F401
    except ImportError as exc:
        raise Skip(f"torch.compile unavailable: {exc}") from None
    return torch.compile(module, dynamic=False)


def sf_backends(op: str, device: str) -> list[tuple[str, str | None]]:
    """(backend, reason-if-not-runnable-here) for every registered backend of ``op``."""
    from .. import backends

    impls = backends.implementations(op)
    avail = backends.available()
    dev = torch.device(device).type
    out = []
    for name in backends.BACKENDS:
        impl = impls.get(name)
        if impl is None:
            # Not registered because its package or kernels are missing (triton not installed,
            # an extension built without CUDA): say so once, like any missing provider.
            if not avail[name]:
                out.append((name, backends.unavailable_reason(name)))
            continue
        reason = None
        if not avail[name]:
            reason = backends.unavailable_reason(name)
        elif impl.devices is not None and dev not in impl.devices:
            reason = f"runs on {', '.join(impl.devices)} tensors, not {dev}"
        elif name == "triton" and dev == "cpu":
            reason = "Triton's CPU interpreter is for testing, not timing"
        out.append((name, reason))
    return out


def skipped(name: str, backend: str, reason: str) -> Provider:
    def build() -> Prepared:
        raise Skip(reason)

    return Provider(name, backend, build)
