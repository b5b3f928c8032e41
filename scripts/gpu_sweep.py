"""CUDA + Triton instance-norm kernels vs the float64 reference on shapes that reach every
schedule of csrc/cuda/instance_norm_kernels.h (plan_instance_norm) and of the Triton twin:
forward and backward, bitwise determinism, float64 gradcheck of the compiled op. Needs a GPU
(step 4 of scripts/verify_gpu.sh; compute-sanitizer runs it with SF_SWEEP_QUICK=1).

    python scripts/gpu_sweep.py [OUT_CSV]

Environment: SF_SWEEP_DEVICE [cuda], SF_SWEEP_BACKENDS [cuda,triton], SF_SWEEP_QUICK [0].
"""

from __future__ import annotations

import csv
import itertools
import os
import sys
import time
from typing import NamedTuple

import torch

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
ACTIVATIONS = [None, "relu", "leaky_relu"]
AFFINES = ["none", "channel", "sample"]
BIG = 4_000_000  # elements above which a shape gets fewer combinations


class Case(NamedTuple):
    name: str  # which CUDA schedule the shape is meant to reach
    shape: tuple[int, int, int, int]
    layout: str
    dtype: torch.dtype
    activation: str | None
    affine: str
    misaligned: bool


def shapes(sm: int, quick: bool) -> list[tuple[str, tuple[int, int, int, int], str]]:
    """(name, shape, layout) for a GPU with ``sm`` multiprocessors."""
    out = [
        ("on_chip vec", (2, 4, 32, 32), "contiguous"),
        ("on_chip odd plane (scalar loads)", (2, 3, 17, 19), "contiguous"),
        ("on_chip 1x1 plane", (3, 5, 1, 1), "contiguous"),
        ("on_chip largest plane 8192", (2, 3, 64, 128), "contiguous"),
        ("on_chip strided input", (2, 3, 16, 20), "strided"),
        ("looped NCHW (N*C >= 2*SMs)", (2, sm, 96, 97), "contiguous"),
        ("looped NCHW vec", (2, sm, 96, 96), "contiguous"),
        ("split NCHW (batch 1, few planes)", (1, 3, 257, 255), "contiguous"),
        ("split NCHW vec", (1, 8, 256, 256), "contiguous"),
        ("looped channels_last (N*tiles >= 2*SMs)", (2 * sm, 3, 20, 21), "channels_last"),
        ("looped channels_last vec, 2 tiles", (2 * sm, 136, 9, 9), "channels_last"),
        ("split channels_last", (1, 3, 100, 101), "channels_last"),
        ("split channels_last vec", (2, 32, 128, 128), "channels_last"),
    ]
    if quick:
        return [s for s in out if _numel(s[1]) <= 40000]
    return out + [
        ("split NCHW large: batch 1, C=32, 1024^2", (1, 32, 1024, 1024), "contiguous"),
        ("split channels_last large", (1, 32, 512, 512), "channels_last"),
        ("looped NCHW large", (4, 64, 256, 256), "contiguous"),
    ]


def _numel(shape) -> int:
    n, c, h, w = shape
    return n * c * h * w


def cases(sm: int, quick: bool) -> list[Case]:
    """Every shape x dtype x (activation, affine, alignment); big shapes and float64 get three
    combinations; misaligned pointers only for contiguous inputs."""
    out = []
    for (name, shape, layout), dtype in itertools.product(shapes(sm, quick), DTYPES):
        combos = [(a, f, s) for a in ACTIVATIONS for f in AFFINES for s in (False, True)]
        if _numel(shape) > BIG or dtype == torch.float64:
            combos = [("relu", "channel", False), ("leaky_relu", "sample", True), (None, "none", False)]
        out += [Case(name, shape, layout, dtype, *c) for c in combos
                if not (c[2] and layout != "contiguous")]
    return out


def misaligned(x):
    """Same values, data pointer 1 element past a 16-byte boundary: forces scalar loads."""
    flat = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)[1:]
    return flat.view(x.shape).copy_(x)


def run_case(backend: str, case: Case, device: str) -> None:
    import stylize_fast as sf
    from stylize_fast import testing
    from stylize_fast.ops import instance_norm_reference as ref
    from stylize_fast.ops.common import activation_code

    n, c = case.shape[:2]
    act = case.activation
    x = testing.make_input(case.shape, case.dtype, case.layout, device=device)
    if case.misaligned:
        x = misaligned(x.contiguous())
    acc = torch.float64 if case.dtype == torch.float64 else torch.float32
    w = b = None
    if case.affine != "none":
        pshape = (c,) if case.affine == "channel" else (n, c)
        w = (torch.randn(pshape, device=device, dtype=acc) * 0.5 + 1).requires_grad_()
        b = (torch.randn(pshape, device=device, dtype=acc) * 0.5).requires_grad_()
    x.requires_grad_()
    with sf.backends.use(backend):
        y = sf.functional.instance_norm(x, w, b, 1e-5, act, 0.1)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], dy)
    x64 = x.detach().double().requires_grad_()
    w64 = None if w is None else w.detach().double().requires_grad_()
    b64 = None if b is None else b.detach().double().requires_grad_()
    y64, _, _ = ref.instance_norm_forward(x64, w64, b64, 1e-5, int(activation_code(act)), 0.1)
    grads64 = torch.autograd.grad(y64, [t for t in (x64, w64, b64) if t is not None], dy.double())
    tol = testing.tolerance(case.dtype)
    testing.assert_close(y, y64, name="output", **tol)
    for g, g64, gname in zip(grads, grads64, ("grad_input", "grad_weight", "grad_bias")):
        # gradients sum over planes: scale the absolute tolerance by their magnitude
        scale = max(1.0, float(g64.abs().max()))
        testing.assert_close(g, g64, name=gname, atol=tol["atol"] * 4 * scale, rtol=tol["rtol"] * 4)
    # bitwise determinism of forward and backward
    with sf.backends.use(backend):
        y2 = sf.functional.instance_norm(x, w, b, 1e-5, act, 0.1)
    grads2 = torch.autograd.grad(y2, [t for t in (x, w, b) if t is not None], dy)
    assert torch.equal(y, y2), "forward not deterministic"
    assert all(torch.equal(g1, g2) for g1, g2 in zip(grads, grads2)), "backward not deterministic"


def _message(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " | ")[:600]


def gradcheck_rows(sm: int, device: str) -> list[list]:
    """float64 gradcheck of the compiled op on a shape of each CUDA schedule."""
    from stylize_fast import testing

    op = torch.ops.stylize_fast.instance_norm_fwd
    rows = []
    for name, shape, layout in [("on_chip", (2, 3, 5, 7), "contiguous"),
                                ("split NCHW", (1, 2, 91, 93), "contiguous"),
                                ("looped NCHW", (2, sm, 91, 93), "contiguous"),
                                ("split channels_last", (1, 5, 40, 41), "channels_last"),
                                ("looped channels_last", (2 * sm, 5, 6, 7), "channels_last")]:
        x = testing.make_input(shape, torch.float64, layout, device=device, requires_grad=True)
        w = torch.randn(shape[1], device=device, dtype=torch.float64, requires_grad=True)
        b = torch.randn(shape[0], shape[1], device=device, dtype=torch.float64, requires_grad=True)
        for act in (0, 2):
            try:
                ok = torch.autograd.gradcheck(
                    lambda x, w, b, act=act: op(x, w, b, 1e-5, act, 0.1)[0], (x, w, b),
                    fast_mode=x.numel() > 2000)
                status, msg = ("ok" if ok else "FAIL"), ""
            except Exception as exc:  # noqa: BLE001
                status, msg = "FAIL", _message(exc)
            rows.append(["cuda", f"gradcheck {name}", "x".join(map(str, shape)), layout, "float64",
                         act, "channel+sample", "aligned", status, "", msg])
            print(rows[-1][:9], flush=True)
    return rows


def main(argv: list[str]) -> int:
    import stylize_fast as sf

    device = os.environ.get("SF_SWEEP_DEVICE", "cuda")
    backends = os.environ.get("SF_SWEEP_BACKENDS", "cuda,triton").split(",")
    quick = os.environ.get("SF_SWEEP_QUICK", "0") == "1"
    out_csv = argv[0] if argv else "sweep.csv"
    sm = torch.cuda.get_device_properties(0).multi_processor_count if device == "cuda" else 4

    rows = []
    for backend in backends:
        if not sf.backends.available()[backend]:
            print(f"SKIP backend {backend}: {sf.backends.unavailable_reason(backend)}")
            continue
        for case in cases(sm, quick):
            t0 = time.perf_counter()
            try:
                run_case(backend, case, device)
                status, msg = "ok", ""
            except Exception as exc:  # noqa: BLE001 (report every failure, keep going)
                status, msg = "FAIL", _message(exc)
            rows.append([backend, case.name, "x".join(map(str, case.shape)), case.layout,
                         str(case.dtype).removeprefix("torch."), case.activation, case.affine,
                         "misaligned" if case.misaligned else "aligned", status,
                         f"{time.perf_counter() - t0:.2f}", msg])
            if status != "ok":
                print("FAIL", rows[-1])
        print(f"{backend}: {sum(r[0] == backend for r in rows)} cases, "
              f"{sum(r[0] == backend and r[8] != 'ok' for r in rows)} failed", flush=True)
    if "cuda" in backends and sf.backends.available().get("cuda"):
        rows += gradcheck_rows(sm, device)

    with open(out_csv, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["backend", "case", "shape", "layout", "dtype", "activation", "affine",
                     "alignment", "status", "seconds", "message"])
        wr.writerows(rows)
    failures = sum(r[8] != "ok" for r in rows)
    print(f"{len(rows)} cases, {failures} failed; table: {out_csv}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
