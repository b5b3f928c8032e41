"""Backend registry and selection.

Every op (``"instance_norm"``, ``"padded_conv2d"``, ...) registers one implementation per backend
with :func:`register`. :func:`select` picks one for a given input:

* forced by :func:`use` (innermost wins) or the ``STYLIZE_FAST_BACKEND`` environment variable
  (read by :mod:`stylize_fast.config`; ``config.override(backend=...)`` sets it in code):
  that backend or a clear error, never a silent substitute;
* otherwise automatic: CUDA tensors -> ``cuda``, else ``triton``, else ``reference``;
  CPU tensors -> ``cpu``, else ``reference``. An automatic choice that cannot run this input
  (not built, unsupported dtype, ...) falls back quietly to the next one.

The ``reference`` backend is plain PyTorch and always present.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from . import _extension, config

BACKENDS = ("cpu", "cuda", "triton", "reference")
ENV_VAR = config.OPTIONS["backend"].variable  # STYLIZE_FAST_BACKEND
_AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}


@dataclass(frozen=True)
class Impl:
    """One backend's implementation of one op.

    fn:        the implementation; takes the op's internal arguments.
    devices:   device types it accepts ("cpu", "cuda"); None means any.
    supports:  optional legality check fn(*args) -> None if it can run, else the reason.
    auto:      whether the automatic choice may pick it: a bool, or fn(*args) -> bool deciding per
               call (e.g. by shape). False for an implementation that is correct but measured
               slower than the next one; forcing the backend runs it regardless.
    """

    fn: Callable
    devices: tuple[str, ...] | None
    supports: Callable[..., str | None] | None = None
    auto: bool | Callable[..., bool] = True


_REGISTRY: dict[str, dict[str, Impl]] = {}
_forced_stack: list[str] = []


def register(
    op: str,
    backend: str,
    fn: Callable,
    *,
    devices: tuple[str, ...] | None,
    supports: Callable[..., str | None] | None = None,
    auto: bool | Callable[..., bool] = True,
) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"register: backend must be one of {BACKENDS}, got {backend!r}")
    _REGISTRY.setdefault(op, {})[backend] = Impl(
        fn, None if devices is None else tuple(devices), supports, auto)


def implementations(op: str) -> dict[str, Impl]:
    """The registered implementations of ``op`` by backend name."""
    return dict(_REGISTRY.get(op, {}))


_TRITON_IMPORTABLE = importlib.util.find_spec("triton") is not None


def _triton_importable() -> bool:
    return _TRITON_IMPORTABLE


triton_interpreted = config.triton_interpreted


def available() -> dict[str, bool]:
    """Which backends can run on this machine: keys ``cpu``, ``cuda``, ``triton``, ``reference``."""
    cuda_device = torch.cuda.is_available()
    return {
        "cpu": _extension.loaded(),
        "cuda": _extension.compiled_with_cuda() and cuda_device,
        "triton": _triton_importable() and (cuda_device or triton_interpreted()),
        "reference": True,
    }


def _is_available(name: str) -> bool:
    """available()[name] without asking torch about CUDA for the backends that do not need it
    (select runs on every op call)."""
    if name == "cpu":
        return _extension.loaded()
    if name == "reference":
        return True
    return available()[name]


def unavailable_reason(name: str) -> str:
    """Why ``name`` is not available (empty string if it is)."""
    if available().get(name, False):
        return ""
    if name == "cpu":
        return (f"the C++ extension did not load ({_extension.load_error()}); build it with "
                "`pip install --no-build-isolation -e .`")
    if name == "cuda":
        if not _extension.compiled_with_cuda():
            return "the extension was built without CUDA kernels (see `stylize-fast info`)"
        return "no CUDA device is visible to torch"
    if name == "triton":
        if not _triton_importable():
            return "triton is not installed (`pip install triton`)"
        return "no CUDA device (set TRITON_INTERPRET=1 to run Triton kernels on the CPU)"
    return f"unknown backend {name!r}; expected one of {BACKENDS}"


def _check_name(name: object, source: str) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"{source}: backend must be one of {BACKENDS}, got {name!r}")
    return name


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """Force one backend inside the ``with`` block; an unavailable one raises RuntimeError."""
    name = _check_name(name, "stylize_fast.backends.use")
    if not available()[name]:
        raise RuntimeError(f"backend {name!r} is not available: {unavailable_reason(name)}")
    _forced_stack.append(name)
    try:
        yield
    finally:
        _forced_stack.pop()


def forced() -> str | None:
    """The backend forced by ``use`` or ``STYLIZE_FAST_BACKEND``, or None for automatic."""
    if _forced_stack:
        return _forced_stack[-1]
    name = config.get("backend")  # checked by config: auto or one of BACKENDS
    return None if name == "auto" else name


def select(op: str, input: torch.Tensor, *args) -> tuple[str, Callable]:
    """Choose the backend that runs ``op`` for this ``input``; returns (name, fn).

    ``args`` are the op's remaining internal arguments, passed to the legality checks.
    """
    table = _REGISTRY.get(op)
    if not table:
        raise RuntimeError(f"no implementation of {op!r} is registered")
    device = input.device.type
    name = forced()
    if name is not None:
        if not _is_available(name):
            raise RuntimeError(f"backend {name!r} is not available: {unavailable_reason(name)}")
        impl = table.get(name)
        if impl is None:
            raise RuntimeError(f"backend {name!r} has no implementation of {op}; "
                               f"implemented by: {sorted(table)}")
        if impl.devices is not None and device not in impl.devices:
            raise RuntimeError(f"backend {name!r} cannot run {op} on {device} tensors "
                               f"(it runs on {', '.join(impl.devices)})")
        reason = impl.supports(input, *args) if impl.supports else None
        if reason:
            raise RuntimeError(f"backend {name!r} cannot run {op} on this input: {reason}")
        return name, impl.fn
    for name in _AUTO_ORDER.get(device, ("reference",)):
        impl = table.get(name)
        if impl is None or not impl.auto or not _is_available(name):
            continue
        if impl.devices is not None and device not in impl.devices:
            continue
        if impl.supports is not None and impl.supports(input, *args):
            continue
        if callable(impl.auto) and not impl.auto(input, *args):
            continue
        return name, impl.fn
    raise RuntimeError(f"no backend can run {op} on {device} tensors")
