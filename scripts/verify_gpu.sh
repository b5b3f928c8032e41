#!/usr/bin/env bash
# Everything that needs a GPU, in one command, for whoever gets one:
#
#   scripts/verify_gpu.sh RESULTS_DIR
#
# 1. records the machine (nvidia-smi, versions)                     -> env.txt
# 2. builds the extension with the CUDA kernels (editable install)  -> build.log, info.txt
# 3. the whole test suite, large shapes on (STYLIZE_FAST_LARGE=1), so the cuda and triton
#    backends run on CUDA tensors next to cpu / reference          -> pytest.log, junit.xml
# 4. a sweep of the CUDA and Triton kernels over shapes that reach every schedule (on chip /
#    looped / split, NCHW / channels_last, vector / scalar loads, every dtype, affine
#    none / (C,) / (N, C), each activation), forward and backward vs the float64 reference,
#    bitwise determinism, gradcheck in float64                     -> sweep.log, sweep.csv
# 5. compute-sanitizer memcheck + racecheck on a small subset (if the toolkit has it)
#                                                                   -> sanitizer_*.log
# 6. the benchmarks: benchmarks/bench_*.py, `pytest benchmarks --benchmark-only` and
#    `stylize-fast bench --full` (CSV, PNG, JSON)                    -> bench/, bench_*.log
# Every step runs even if an earlier one failed; summary.txt lists each step's exit status and
# the script exits non-zero if any failed.
#
# Environment: PYTHON [python3] must have a CUDA build of torch (e.g. `pip install torch==2.14.1`
# on CUDA 13 drivers) and triton; CUDA_HOME [/usr/local/cuda or nvcc's]; TORCH_CUDA_ARCH_LIST
# [the visible GPU's]; MAX_JOBS [nproc]; SF_SKIP_SANITIZER=1 skips step 5; SF_SKIP_BENCH=1 step 6.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 RESULTS_DIR" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$1" || exit 2
RES="$(cd "$1" && pwd)"
PY="${PYTHON:-python3}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export STYLIZE_FAST_LARGE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
unset TRITON_INTERPRET STYLIZE_FAST_BACKEND STYLIZE_FAST_NO_CUDA || true
cd "$ROOT" || exit 2
: > "$RES/summary.txt"

step() {  # step NAME LOGFILE COMMAND...: run, log, record the status; never aborts the script
    local name="$1" log="$2"
    shift 2
    local t0=$(date +%s)
    echo "== $name: $*" | tee -a "$RES/summary.txt"
    "$@" > "$log" 2>&1
    local rc=$?
    echo "   exit $rc after $(( $(date +%s) - t0 ))s (log: ${log#$RES/})" | tee -a "$RES/summary.txt"
    tail -n 3 "$log" | sed 's/^/   | /'
    return $rc
}

# 1. machine
{
    date -u
    nvidia-smi || echo "nvidia-smi not found"
    "$PY" -c 'import torch, sys; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
    "$PY" -c 'import triton; print("triton", triton.__version__)' || echo "triton not importable"
    nvcc --version 2>/dev/null | tail -n 2 || echo "nvcc not on PATH"
    git -C "$ROOT" rev-parse HEAD 2>/dev/null && git -C "$ROOT" status --short 2>/dev/null | head -20
} > "$RES/env.txt" 2>&1
echo "== machine: $(grep -E '^torch|^triton' "$RES/env.txt" | tr '\n' ' ')" | tee -a "$RES/summary.txt"
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA device visible to $PY; this script needs a GPU (see env.txt)" | tee -a "$RES/summary.txt"
    exit 2
fi

# 2. build with CUDA (fails loudly if it cannot), then check both GPU backends are available
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
STYLIZE_FAST_FORCE_CUDA=1 step build "$RES/build.log" \
    "$PY" -m pip install -v --no-build-isolation --no-deps -e .
build_rc=$?
step info "$RES/info.txt" "$PY" -m stylize_fast info
step backends "$RES/backends.txt" "$PY" -c '
import stylize_fast as sf
a = sf.backends.available()
print(a)
missing = [b for b in ("cuda", "triton") if not a[b]]
for b in missing:
    print(b, "unavailable:", sf.backends.unavailable_reason(b))
raise SystemExit(1 if missing else 0)'

# 3. the whole suite, large shapes on
step pytest "$RES/pytest.log" "$PY" -m pytest tests -q -rs --durations=25 \
    --junitxml="$RES/junit.xml" -p no:cacheprovider

# 4. schedule sweep of the GPU kernels
cat > "$RES/sweep.py" <<'PYEOF'
"""CUDA + Triton instance-norm kernels vs the float64 reference on shapes that reach every
schedule of csrc/cuda/instance_norm_kernels.h (plan_instance_norm) and of the Triton twin."""
import csv
import itertools
import os
import sys
import time

import torch

import stylize_fast as sf
from stylize_fast import testing
from stylize_fast.ops import instance_norm_reference as ref
from stylize_fast.ops.common import activation_code

DEVICE = os.environ.get("SF_SWEEP_DEVICE", "cuda")
BACKENDS = os.environ.get("SF_SWEEP_BACKENDS", "cuda,triton").split(",")
QUICK = os.environ.get("SF_SWEEP_QUICK", "0") == "1"
out_csv = sys.argv[1] if len(sys.argv) > 1 else "sweep.csv"
sm = torch.cuda.get_device_properties(0).multi_processor_count if DEVICE == "cuda" else 4

# (name, shape, layout): names say which CUDA schedule the shape is meant to reach.
SHAPES = [
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
if not QUICK:
    SHAPES += [
        ("split NCHW large: batch 1, C=32, 1024^2", (1, 32, 1024, 1024), "contiguous"),
        ("split channels_last large", (1, 32, 512, 512), "channels_last"),
        ("looped NCHW large", (4, 64, 256, 256), "contiguous"),
    ]
if QUICK:
    SHAPES = [s for s in SHAPES if s[1][0] * s[1][1] * s[1][2] * s[1][3] <= 40000]

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
ACTIVATIONS = [None, "relu", "leaky_relu"]
AFFINES = ["none", "channel", "sample"]


def misaligned(x):
    """Same values, data pointer 1 element past a 16-byte boundary: forces scalar loads."""
    flat = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)[1:]
    return flat.view(x.shape).copy_(x)


def run_case(backend, name, shape, layout, dtype, act, affine, shift):
    n, c = shape[:2]
    x = testing.make_input(shape, dtype, layout, device=DEVICE)
    if shift:
        x = misaligned(x.contiguous())
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    w = b = None
    if affine != "none":
        pshape = (c,) if affine == "channel" else (n, c)
        w = (torch.randn(pshape, device=DEVICE, dtype=acc) * 0.5 + 1).requires_grad_()
        b = (torch.randn(pshape, device=DEVICE, dtype=acc) * 0.5).requires_grad_()
    x.requires_grad_()
    with sf.backends.use(backend):
        y = sf.functional.instance_norm(x, w, b, 1e-5, act, 0.1)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], dy)
    x64 = x.detach().double().requires_grad_()
    w64 = None if w is None else w.detach().double().requires_grad_()
    b64 = None if b is None else b.detach().double().requires_grad_()
    y64, mean64, rstd64 = ref.instance_norm_forward(x64, w64, b64, 1e-5,
                                                    int(activation_code(act)), 0.1)
    grads64 = torch.autograd.grad(y64, [t for t in (x64, w64, b64) if t is not None], dy.double())
    tol = testing.tolerance(dtype)
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


rows, failures = [], 0
for backend in BACKENDS:
    if not sf.backends.available()[backend]:
        print(f"SKIP backend {backend}: {sf.backends.unavailable_reason(backend)}")
        continue
    for (name, shape, layout), dtype in itertools.product(SHAPES, DTYPES):
        numel = shape[0] * shape[1] * shape[2] * shape[3]
        big = numel > 4_000_000
        combos = [(a, f, s) for a in ACTIVATIONS for f in AFFINES for s in (False, True)]
        if big or dtype == torch.float64:  # keep the sweep short: fewer combinations
            combos = [("relu", "channel", False), ("leaky_relu", "sample", True), (None, "none", False)]
        for act, affine, shift in combos:
            if shift and layout != "contiguous":
                continue
            t0 = time.perf_counter()
            try:
                run_case(backend, name, shape, layout, dtype, act, affine, shift)
                status, msg = "ok", ""
            except Exception as exc:  # noqa: BLE001 (report every failure, keep going)
                failures += 1
                status, msg = "FAIL", f"{type(exc).__name__}: {exc}".replace("\n", " | ")[:600]
            rows.append([backend, name, "x".join(map(str, shape)), layout, str(dtype)[6:],
                         act, affine, "misaligned" if shift else "aligned", status,
                         f"{time.perf_counter() - t0:.2f}", msg])
            if status != "ok":
                print("FAIL", rows[-1])
    print(f"{backend}: {sum(r[0] == backend for r in rows)} cases, "
          f"{sum(r[0] == backend and r[8] != 'ok' for r in rows)} failed", flush=True)

# gradcheck in float64 of the compiled op on shapes of each CUDA schedule (fast mode for big ones)
if "cuda" in BACKENDS and sf.backends.available().get("cuda"):
    op = torch.ops.stylize_fast.instance_norm_fwd
    for name, shape, layout in [("on_chip", (2, 3, 5, 7), "contiguous"),
                                ("split NCHW", (1, 2, 91, 93), "contiguous"),
                                ("looped NCHW", (2, sm, 91, 93), "contiguous"),
                                ("split channels_last", (1, 5, 40, 41), "channels_last"),
                                ("looped channels_last", (2 * sm, 5, 6, 7), "channels_last")]:
        x = testing.make_input(shape, torch.float64, layout, device=DEVICE, requires_grad=True)
        w = torch.randn(shape[1], device=DEVICE, dtype=torch.float64, requires_grad=True)
        b = torch.randn(shape[0], shape[1], device=DEVICE, dtype=torch.float64, requires_grad=True)
        for act in (0, 2):
            try:
                ok = torch.autograd.gradcheck(lambda x, w, b: op(x, w, b, 1e-5, act, 0.1)[0],
                                              (x, w, b), fast_mode=x.numel() > 2000)
                status, msg = ("ok" if ok else "FAIL"), ""
            except Exception as exc:  # noqa: BLE001
                status, msg = "FAIL", f"{type(exc).__name__}: {exc}".replace("\n", " | ")[:600]
            failures += status != "ok"
            rows.append(["cuda", f"gradcheck {name}", "x".join(map(str, shape)), layout, "float64",
                         act, "channel+sample", "aligned", status, "", msg])
            print(rows[-1][:9], flush=True)

with open(out_csv, "w", newline="") as f:
    wr = csv.writer(f)
    wr.writerow(["backend", "case", "shape", "layout", "dtype", "activation", "affine",
                 "alignment", "status", "seconds", "message"])
    wr.writerows(rows)
print(f"{len(rows)} cases, {failures} failed; table: {out_csv}")
sys.exit(1 if failures else 0)
PYEOF
step sweep "$RES/sweep.log" "$PY" "$RES/sweep.py" "$RES/sweep.csv"

# 5. compute-sanitizer on a quick subset (out-of-bounds accesses, shared-memory races)
SANITIZER="$(command -v compute-sanitizer || true)"
[ -z "$SANITIZER" ] && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" ] && \
    SANITIZER="${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer"
if [ "${SF_SKIP_SANITIZER:-0}" != "1" ] && [ -n "$SANITIZER" ]; then
    for tool in memcheck racecheck; do
        SF_SWEEP_QUICK=1 SF_SWEEP_BACKENDS=cuda step "sanitizer-$tool" "$RES/sanitizer_$tool.log" \
            "$SANITIZER" --tool "$tool" --error-exitcode 3 --target-processes all \
            "$PY" "$RES/sweep.py" "$RES/sanitizer_$tool.csv"
    done
else
    echo "== sanitizer: skipped (${SANITIZER:-compute-sanitizer not found})" | tee -a "$RES/summary.txt"
fi

# 6. benchmarks: scripts benchmarks/bench_*.py, the pytest-benchmark suite, the CLI bench
if [ "${SF_SKIP_BENCH:-0}" != "1" ]; then
    mkdir -p "$RES/bench"
    for f in benchmarks/bench_*.py; do
        [ -e "$f" ] || continue
        base="$(basename "$f" .py)"
        help="$("$PY" "$f" --help 2>/dev/null || true)"
        args=()
        if grep -q -- "--csv" <<< "$help"; then args+=(--csv "$RES/bench/$base.csv"); fi
        if grep -q -- "--output" <<< "$help"; then args+=(--output "$RES/bench"); fi
        if grep -q -- "--device" <<< "$help"; then args+=(--device cuda); fi
        step "bench $base" "$RES/bench_$base.log" "$PY" "$f" "${args[@]}"
    done
    if ls benchmarks/test_*.py > /dev/null 2>&1; then
        step "pytest benchmarks" "$RES/bench_pytest.log" "$PY" -m pytest benchmarks -q \
            --benchmark-only --benchmark-json="$RES/bench/pytest_benchmark.json" -p no:cacheprovider
    fi
    if "$PY" -m stylize_fast bench --help > /dev/null 2>&1; then
        step "stylize-fast bench --full" "$RES/bench_cli.log" \
            "$PY" -m stylize_fast bench --full --output "$RES/bench" --device cuda
    else
        echo "== stylize-fast bench: not available in this checkout" | tee -a "$RES/summary.txt"
    fi
fi

echo
echo "summary ($RES/summary.txt):"
cat "$RES/summary.txt"
if grep -q "exit [1-9]" "$RES/summary.txt"; then
    echo "verify_gpu: FAILED steps above"
    exit 1
fi
echo "verify_gpu: all steps passed"
[ $build_rc -eq 0 ]
