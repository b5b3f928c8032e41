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


# ---------------------------------------------------------------------------------------------
# Half precision: one rule for every kernel's bfloat16 / float16 outputs and gradients.
#
# A half-precision result is compared with float64 run on the *same rounded inputs*, so the only
# errors left are the kernel's own: float32 accumulation (tiny) and the final rounding to the
# output dtype (half a unit in the last place). The error is measured as
# max|actual - expected| / max|expected| and may be at most HALF_ROUNDINGS roundings of the
# largest value (about one extra rounding of an intermediate), plus float32 accumulation over
# `terms` products; and never more than twice the error of PyTorch's own op in that dtype on the
# same inputs where one exists (a kernel may not be worse than the op it replaces). A result
# that is 5% off (or zero, halved, negated) fails.

# Unit roundoff (half an ulp of 1.0) per dtype.
UNIT_ROUNDOFF: dict[torch.dtype, float] = {
    torch.bfloat16: 2.0 ** -8,
    torch.float16: 2.0 ** -11,
    torch.float32: 2.0 ** -24,
    torch.float64: 2.0 ** -53,
}
# Roundings of the largest value a half-precision result may be off by (2.56 x 2^-8 = 1e-2 for
# bfloat16, 1.25e-3 for float16): one for the output, the rest for an intermediate rounding.
HALF_ROUNDINGS = 2.56
# Whatever PyTorch's own op does, a bfloat16 / float16 result more than this far off (relative to
# the largest value) fails: a 5% / 1% error must never pass.
HALF_CEILING: dict[torch.dtype, float] = {torch.bfloat16: 2.5e-2, torch.float16: 5e-3}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max|actual - expected| / max|expected|`` in float64 (inf for a NaN; the absolute error
    for an all-zero ``expected``)."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if tuple(a.shape) != tuple(e.shape):
        raise AssertionError(f"shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    if a.numel() == 0:
        return 0.0
    err = (a - e).abs().nan_to_num(float("inf")).max().item()
    scale = e.abs().max().item()
    return err / scale if scale > 0 else err


def half_tolerance(dtype: torch.dtype, terms: int = 1) -> float:
    """The floor of the half-precision rule: HALF_ROUNDINGS roundings of the largest value in
    ``dtype`` plus float32 accumulation over ``terms`` products (random rounding: sqrt growth)."""
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"half_tolerance: dtype must be bfloat16 or float16, got {dtype}")
    return HALF_ROUNDINGS * UNIT_ROUNDOFF[dtype] + 4.0 * max(1, terms) ** 0.5 * \
        UNIT_ROUNDOFF[torch.float32]


def assert_half_close(actual: torch.Tensor, expected: torch.Tensor, *, terms: int = 1,
                      baseline: torch.Tensor | None = None, name: str = "output") -> float:
    """The half-precision rule: ``actual`` (bfloat16 / float16) against ``expected`` (float64 on
    the same rounded inputs) within max(:func:`half_tolerance`, 2 x the error of ``baseline``),
    ``baseline`` being PyTorch's own op's result in ``actual``'s dtype on the same inputs; never
    more than HALF_CEILING. Returns the error (relative to the largest expected value)."""
    dtype = actual.dtype
    if dtype not in (torch.bfloat16, torch.float16):
        raise AssertionError(f"{name}: assert_half_close needs a bfloat16 / float16 result, got "
                             f"{dtype}")
    err = relative_error(actual, expected)
    tol = half_tolerance(dtype, terms)
    own = None
    if baseline is not None:
        own = relative_error(baseline, expected)
        tol = max(tol, 2.0 * own)
    tol = min(tol, HALF_CEILING[dtype])
    if not err <= tol:
        torch_note = "" if own is None else f", PyTorch's own {dtype} op {own:.3e}"
        abs_tol = tol * expected.detach().abs().max().item()
        raise AssertionError(
            f"{name}: {dtype} error {err:.3e} of the largest value exceeds {tol:.3e}"
            f"{torch_note}\n" + describe_mismatch(actual, expected, abs_tol, 0.0))
    return err


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, *, terms: int = 1,
                   baseline: torch.Tensor | None = None, name: str = "output",
                   scale: float = 1.0) -> None:
    """Dispatch on ``actual``'s dtype: the half-precision rule (:func:`assert_half_close`) for
    bfloat16 / float16, else :func:`assert_close` at the dtype's tolerance times ``scale``."""
    if actual.dtype in (torch.bfloat16, torch.float16):
        assert_half_close(actual, expected, terms=terms, baseline=baseline, name=name)
    else:
        assert_close(actual, expected, name=name, **tolerance(actual.dtype, scale))


def pytorch_padded_conv2d_grads(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                                stride, padding, mode: str, grad_output: torch.Tensor,
                                ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """PyTorch's own ``F.pad`` + ``F.conv2d`` in the inputs' dtype (the baseline of the
    half-precision rule): output and gradients (input, weight, bias; None where absent)."""
    import torch.nn.functional as F

    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (x, w, b)]
    xp = F.pad(leaves[0], (pw, pw, ph, ph), mode=mode) if mode != "zeros" else \
        F.pad(leaves[0], (pw, pw, ph, ph))
    y = F.conv2d(xp, leaves[1], leaves[2], stride)
    grads = torch.autograd.grad(y, [t for t in leaves if t is not None], grad_output)
    it = iter(grads)
    return y.detach(), [None if t is None else next(it) for t in leaves]


def pytorch_instance_norm_grads(x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None,
                                eps: float, grad_output: torch.Tensor, activation=None,
                                ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """PyTorch's own ``F.instance_norm`` in ``x``'s dtype, then ``activation`` (a function, e.g.
    ``F.relu``) when given -- the baseline of the half-precision rule: output and gradients
    (input, weight, bias; None where absent). A per-sample ``(N, C)`` weight / bias is applied
    after the normalisation."""
    def aten_instance_norm(x, weight=None, bias=None, eps=1e-5):
        # aten's op: what F.instance_norm runs, without its check for a 1x1 plane.
        return torch.instance_norm(x, weight, bias, None, None, True, 0.0, eps, False)

    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (x, w, b)]
    xl, wl, bl = leaves
    per_sample = wl is not None and wl.dim() == 2 or bl is not None and bl.dim() == 2
    if per_sample:
        y = aten_instance_norm(xl, eps=eps)
        if wl is not None:
            y = y * wl.to(y.dtype)[:, :, None, None]
        if bl is not None:
            y = y + bl.to(y.dtype)[:, :, None, None]
    else:
        y = aten_instance_norm(xl, weight=None if wl is None else wl.to(xl.dtype),
                            bias=None if bl is None else bl.to(xl.dtype), eps=eps)
    if activation is not None:
        y = activation(y)
    grads = torch.autograd.grad(y, [t for t in leaves if t is not None], grad_output)
    it = iter(grads)
    return y.detach(), [None if t is None else next(it) for t in leaves]
