"""Emulated CUDA instance-norm kernels (csrc/cuda/instance_norm_kernels.cu) vs the float64
reference: every schedule (on chip / looped / split, NCHW / channels_last), vector widths 1 / 2 /
4 / 8, four dtypes, affine none / (C,) / (N, C), three activations, forward and backward."""

from __future__ import annotations

import itertools

import torch

from stylize_fast import testing
from stylize_fast.ops import instance_norm_reference as ref

SM = 2  # plans for a 2-SM GPU: split below 4 blocks, so small shapes reach every schedule

# (shape, layout, schedule expected for aligned float32 input); odd sizes force scalar loads
SHAPES = [
    ((2, 3, 5, 7), "contiguous", "on_chip"),           # odd plane: scalar loads
    ((2, 4, 8, 8), "contiguous", "on_chip"),
    ((1, 2, 64, 128), "contiguous", "on_chip"),        # largest on-chip plane (8192)
    ((2, 2, 91, 93), "contiguous", "looped"),
    ((2, 2, 96, 96), "contiguous", "looped"),
    ((1, 2, 96, 96), "contiguous", "split"),
    ((1, 1, 97, 131), "contiguous", "split"),          # uneven last split
    ((4, 3, 6, 7), "channels_last", "looped"),
    ((4, 8, 5, 5), "channels_last", "looped"),
    ((1, 3, 16, 17), "channels_last", "split"),
    ((1, 8, 20, 20), "channels_last", "split"),
    ((1, 200, 16, 16), "channels_last", "split"),      # two channel tiles, partial last tile
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def misaligned(x, layout):
    """Same values, data pointer one element past 16-byte alignment: scalar loads."""
    flat = torch.empty(x.numel() + 1, dtype=x.dtype)[1:]
    if layout == "channels_last":
        n, c, h, w = x.shape
        return flat.view(n, h, w, c).copy_(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return flat.view(x.shape).copy_(x)


def cases() -> list[tuple]:
    """Every (shape, layout, expected schedule, dtype, activation, affine, misaligned) case."""
    out = []
    for (shape, layout, expect), dtype in itertools.product(SHAPES, DTYPES):
        combos = [(a, f, s) for a in (0, 1, 2) for f in ("none", "channel", "sample")
                  for s in (False, True)]
        if shape[2] * shape[3] > 4000:  # large planes are slow in emulation: fewer combinations
            combos = [(1, "channel", False), (2, "sample", True), (0, "none", False)]
        out += [(shape, layout, expect, dtype, *combo) for combo in combos]
    return out


def check_case(emu, case, seen: set) -> None:
    """One case, forward and backward, vs the float64 reference; raises on a mismatch."""
    shape, layout, expect, dtype, act, affine, shift = case
    n, c = shape[:2]
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = testing.make_input(shape, dtype, layout)
    if shift:
        x = misaligned(x, layout)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    w = b = None
    if affine != "none":
        ps = (c,) if affine == "channel" else (n, c)
        w = torch.randn(ps, dtype=acc) * 0.5 + 1
        b = torch.randn(ps, dtype=acc) * 0.5
    with testing.poisoned_outputs():
        y, mean, rstd, sched = emu.fwd(x, w, b, 1e-5, act, 0.1, SM)
    seen.add((layout, sched))
    if dtype == torch.float32 and not shift:
        assert sched.startswith(expect), f"schedule {sched}, expected {expect}"
    x64 = x.detach().double().requires_grad_()
    w64 = None if w is None else w.double().requires_grad_()
    b64 = None if b is None else b.double().requires_grad_()
    y64, m64, r64 = ref.instance_norm_forward(x64, w64, b64, 1e-5, act, 0.1)
    tol = testing.tolerance(dtype)
    testing.assert_close(y, y64, name="output", **tol)
    testing.assert_close(mean, m64, name="mean", **tol)
    testing.assert_close(rstd, r64, name="rstd", atol=tol["atol"], rtol=tol["rtol"] * 10)
    dz = testing.make_input(shape, dtype, layout, mean=0.0, std=1.0).contiguous(memory_format=fmt)
    mask = [True, w is not None, b is not None]
    with testing.poisoned_outputs():
        dx, dw, db = emu.bwd(dz, x, w, b, mean, rstd, act, 0.1, mask, SM)
    want = [t for t in (x64, w64, b64) if t is not None]
    g64 = torch.autograd.grad(y64, want, dz.double())
    got = [dx] + ([dw] if w is not None else []) + ([db] if b is not None else [])
    for g, e, name in zip(got, g64, ("grad_input", "grad_weight", "grad_bias")):
        scale = max(1.0, float(e.abs().max()))  # sums over a plane: scale atol
        testing.assert_close(g, e, name=name, atol=tol["atol"] * 4 * scale, rtol=tol["rtol"] * 4)
    if w is not None:  # dgamma / dbeta without dx: the sums-only path, same bits
        dx0, dw0, db0 = emu.bwd(dz, x, w, b, mean, rstd, act, 0.1, [False, True, True], SM)
        assert dx0.numel() == 0 and torch.equal(dw0, dw) and torch.equal(db0, db), \
            "grads without dx differ from grads with dx"


def run(emu) -> tuple[int, int]:
    """Runs every case on the emulated extension; returns (cases, failures)."""
    torch.manual_seed(0)
    failures = 0
    seen: set = set()
    all_cases = cases()
    for case in all_cases:
        try:
            check_case(emu, case, seen)
        except Exception as exc:  # noqa: BLE001 (report every failing case)
            failures += 1
            shape, layout, _, dtype, act, affine, shift = case
            print(f"FAIL {shape} {layout} {dtype} act={act} affine={affine} misaligned={shift}: "
                  f"{type(exc).__name__}: {exc}"[:1500], flush=True)
    print("schedules reached (layout, schedule/vector width):")
    for item in sorted(seen):
        print("  ", *item)
    print(f"cuda emulation, instance norm: {len(all_cases)} cases, {failures} failed", flush=True)
    return len(all_cases), failures
