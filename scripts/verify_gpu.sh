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
#    bitwise determinism, gradcheck in float64 (scripts/gpu_sweep.py) -> sweep.log, sweep.csv
# 5. compute-sanitizer memcheck + racecheck on a small subset (if the toolkit has it)
#                                                                   -> sanitizer_*.log
# 6. the benchmarks: benchmarks/bench_*.py, `pytest benchmarks --benchmark-only` and
#    `stylize-fast bench --full` (CSV, PNG, JSON)                    -> bench/, bench_*.log
# Every step runs even if an earlier one failed; summary.txt lists each step's exit status and
# the script exits non-zero if any failed.
#
# SF_QUICK=1: the same checks sized for a lease of minutes (about 8 on 16 cores): an in-place
# build of the CUDA kernels for the visible GPU only, CPU kernels at the baseline instruction set
# (STYLIZE_FAST_BASELINE_CPU_ONLY=1); only the GPU cases of the kernel tests (`-k "cuda or
# triton"`, on every core with pytest-xdist when present), no large shapes; the quick sweep;
# memcheck only; `stylize-fast bench` on the quick case list. Each step is stopped after
# SF_STEP_SECONDS [180] (pytest gets SIGINT first, so it still prints its summary).
# SF_SKIP_BUILD=1 uses an extension already built in the checkout.
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
QUICK="${SF_QUICK:-0}"
STEP_SECONDS="${SF_STEP_SECONDS:-180}"
if [ "$QUICK" = "1" ]; then export STYLIZE_FAST_LARGE=0; else export STYLIZE_FAST_LARGE=1; fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
unset TRITON_INTERPRET STYLIZE_FAST_BACKEND STYLIZE_FAST_NO_CUDA || true
cd "$ROOT" || exit 2
: > "$RES/summary.txt"

step() {  # step NAME LOGFILE COMMAND...: run, log, record the status; never aborts the script
    local name="$1" log="$2"
    shift 2
    local t0=$(date +%s)
    echo "== $name: $*" | tee -a "$RES/summary.txt"
    if [ "$QUICK" = "1" ]; then
        timeout -s INT -k 15 "$STEP_SECONDS" "$@" > "$log" 2>&1
    else
        "$@" > "$log" 2>&1
    fi
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
if [ "${SF_SKIP_BUILD:-0}" = "1" ]; then
    echo "== build: skipped (SF_SKIP_BUILD=1)" | tee -a "$RES/summary.txt"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    build_rc=0
elif [ "$QUICK" = "1" ]; then
    export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
    STYLIZE_FAST_FORCE_CUDA=1 STYLIZE_FAST_BASELINE_CPU_ONLY=1 step build "$RES/build.log" \
        "$PY" setup.py build_ext --inplace
    build_rc=$?
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
    STYLIZE_FAST_FORCE_CUDA=1 step build "$RES/build.log" \
        "$PY" -m pip install -v --no-build-isolation --no-deps -e .
    build_rc=$?
fi
step info "$RES/info.txt" "$PY" -m stylize_fast info
step backends "$RES/backends.txt" "$PY" scripts/check_gpu_backends.py

# 3. the whole suite, large shapes on
if [ "$QUICK" = "1" ]; then
    xdist=()
    "$PY" -c 'import xdist' 2>/dev/null && xdist=(-n "$(nproc)")
    step pytest "$RES/pytest.log" "$PY" -m pytest tests/test_instance_norm.py \
        tests/test_instance_norm_triton.py tests/test_padded_conv.py \
        tests/test_padded_conv_activation.py tests/test_padded_conv_triton.py \
        tests/test_fused_instance_norm_layer.py tests/test_backends.py tests/test_inference.py \
        -k "cuda or triton" -q -rfEs --durations=15 "${xdist[@]}" \
        --junitxml="$RES/junit.xml" -p no:cacheprovider
else
    step pytest "$RES/pytest.log" "$PY" -m pytest tests -q -rs --durations=25 \
        --junitxml="$RES/junit.xml" -p no:cacheprovider
fi

# 4. schedule sweep of the GPU kernels (scripts/gpu_sweep.py)
SF_SWEEP_QUICK="${SF_SWEEP_QUICK:-$QUICK}" step sweep "$RES/sweep.log" \
    "$PY" scripts/gpu_sweep.py "$RES/sweep.csv"

# 5. compute-sanitizer on a quick subset (out-of-bounds accesses, shared-memory races)
SANITIZER="$(command -v compute-sanitizer || true)"
[ -z "$SANITIZER" ] && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" ] && \
    SANITIZER="${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer"
if [ "${SF_SKIP_SANITIZER:-0}" != "1" ] && [ -n "$SANITIZER" ]; then
    tools=(memcheck racecheck)
    [ "$QUICK" = "1" ] && tools=(memcheck)
    for tool in "${tools[@]}"; do
        SF_SWEEP_QUICK=1 SF_SWEEP_BACKENDS=cuda step "sanitizer-$tool" "$RES/sanitizer_$tool.log" \
            "$SANITIZER" --tool "$tool" --error-exitcode 3 --target-processes all \
            "$PY" scripts/gpu_sweep.py "$RES/sanitizer_$tool.csv"
    done
else
    echo "== sanitizer: skipped (${SANITIZER:-compute-sanitizer not found})" | tee -a "$RES/summary.txt"
fi

# 6. benchmarks: scripts benchmarks/bench_*.py, the pytest-benchmark suite, the CLI bench
if [ "${SF_SKIP_BENCH:-0}" != "1" ] && [ "$QUICK" = "1" ]; then
    mkdir -p "$RES/bench"
    step "stylize-fast bench" "$RES/bench_cli.log" "$PY" -m stylize_fast bench --device cuda \
        --allocator pinned --time-limit "$(( STEP_SECONDS * 2 / 3 ))" --output "$RES/bench"
elif [ "${SF_SKIP_BENCH:-0}" != "1" ]; then
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
