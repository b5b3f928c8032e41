"""Helpers for testing kernels against the float64 reference: tolerances, inputs, a diff report,
output poisoning. Used by tests/ and benchmarks/; public so downstream kernels can reuse them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

# (atol, rtol) of a kernel's output against the float64 reference, by input dtype. Outputs of a
# normalisation are O(1); float32 accumulates in float32, half types round the output once.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (5e-5, 1e-5),
    torch.bfloat16: (2e-2, 1.6e-2),
    torch.float16: (2e-3, 2e-3),
}

LAYOUTS = ("contiguous", "channels_last", "strided")


def tolerance(dtype: torch.dtype, scale: float = 1.0) -> dict[str, float]:
    """``{"atol": .., "rtol": ..}`` for ``dtype``, optionally scaled (e.g. for gradients)."""
    atol, rtol = TOLERANCES[dtype]
    return {"atol": atol * scale, "rtol": rtol * scale}


def make_input(
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    layout: str = "contiguous",
    *,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
    mean: float = 0.5,
    std: float = 2.0,
    requires_grad: bool = False,
) -> torch.Tensor:
    """Fresh random input (never zeros) with a non-zero mean, in the given layout:
    ``"contiguous"``, ``"channels_last"`` or ``"strided"`` (a non-contiguous view: every other
    column of a twice-as-wide tensor)."""
    if layout not in LAYOUTS:
        raise ValueError(f"make_input: layout must be one of {LAYOUTS}, got {layout!r}")
    shape = tuple(shape)
    if layout == "strided":
        wide = (*shape[:-1], shape[-1] * 2)
        base = torch.randn(wide, generator=generator, dtype=torch.float64) * std + mean
        x = base.to(device=device, dtype=dtype)[..., ::2]
    else:
        x = (torch.randn(shape, generator=generator, dtype=torch.float64) * std + mean)
        x = x.to(device=device, dtype=dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def describe_mismatch(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float,
                      limit: int = 5) -> str:
    """A readable report of where ``actual`` and ``expected`` differ beyond tolerance."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    err = (a - e).abs()
    bad = ~((err <= atol + rtol * e.abs()) | (a.isnan() & e.isnan()))
    count = int(bad.sum())
    lines = [f"{count} of {a.numel()} elements differ (atol={atol:g}, rtol={rtol:g}); "
             f"max abs error {err.nan_to_num(float('inf')).max().item():.3e}"]
    for idx in bad.nonzero()[:limit].tolist():
        i = tuple(idx)
        lines.append(f"  at {i}: actual {a[i].item():.8g}, expected {e[i].item():.8g}")
    return "\n".join(lines)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float,
                 name: str = "output") -> None:
    """Assert shape equality and closeness; on failure, say where the values differ."""
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected "
                             f"{tuple(expected.shape)}")
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.allclose(a, e, atol=atol, rtol=rtol, equal_nan=True):
        raise AssertionError(f"{name}: " + describe_mismatch(a, e, atol, rtol))


def assert_all_written(t: torch.Tensor, name: str = "output") -> None:
    """After :func:`poisoned_outputs`: every element of ``t`` was written (no NaN poison left)."""
    nan = t.detach().isnan()
    if nan.any():
        first = tuple(nan.nonzero()[0].tolist())
        raise AssertionError(f"{name}: {int(nan.sum())} of {t.numel()} elements never written "
                             f"(first at {first})")


@contextlib.contextmanager
def poisoned_outputs() -> Iterator[None]:
    """Inside the block every fresh tensor allocation (torch.empty / at::empty, which kernels use
    for their outputs) is filled with NaN, so an element a kernel forgets to write shows up."""
    import torch.utils.deterministic as det

    was_det, was_warn = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    was_fill = det.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    try:
        yield
    finally:
        det.fill_uninitialized_memory = was_fill
        torch.use_deterministic_algorithms(was_det, warn_only=was_warn)


def float64_copy(t: torch.Tensor | None) -> torch.Tensor | None:
    """A detached float64 copy (same layout) with requires_grad matching ``t``."""
    if t is None:
        return None
    return t.detach().double().requires_grad_(t.requires_grad)
