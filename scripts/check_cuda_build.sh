#!/usr/bin/env bash
# Compile the CUDA kernels (csrc/cuda/*.cu + *.cpp) without a GPU and print the ptxas resource
# report: registers, spill bytes and stack frame of every kernel for every architecture.
# Exits non-zero on a failed build, any compiler warning, any spill, any stack frame, or a
# requested architecture without SASS.
#
#   scripts/check_cuda_build.sh [REPORT_DIR]
#   scripts/check_cuda_build.sh --emulate [REPORT_DIR]
#
# --emulate runs the device code instead, on the CPU: `python -m tests.cuda_emulation` compiles
# csrc/cuda/instance_norm_kernels.cu and padded_conv_kernels.cu (the padded conv, and its forward
# with the normalize-on-load flag for norm_conv2d) with the host compiler against
# tests/cuda_emulation/cuda_host_emulation.h (blocks in sequence, their threads as OS threads,
# __syncthreads / __syncthreads_or / __shfl_down_sync emulated) with the system python's CPU
# torch, and compares every schedule, layout, dtype, forward and backward with the float64
# reference (tests/cuda_emulation/run_*.py). Catches indexing, reduction and synchronisation-order
# bugs; not timing, not the real hardware's rounding of fast-math intrinsics.
#
# REPORT_DIR (default: a temp dir, printed) receives build.log, ptxas.tsv, report.md (written by
# scripts/ptxas_report.py), and the wheel. The build happens in a temporary copy of the source
# tree, so the checkout's in-place stylize_fast/_C*.so and _build_info.json are never touched.
#
# Environment (defaults in brackets):
#   SF_CUDA_PYTHON          python with a CUDA build of torch  [/opt/sf-cuda/bin/python]
#   CUDA_HOME               CUDA toolkit with nvcc             [/usr/local/cuda]
#   TORCH_CUDA_ARCH_LIST    architectures                      [8.0;9.0]
#   MAX_JOBS                parallel compile jobs              [1]
# Set up the venv once (5.5 GB; the torch wheel ships the cuBLAS/cuSPARSE headers a bare
# toolkit lacks):
#   python3 -m venv /opt/sf-cuda && /opt/sf-cuda/bin/pip install torch==2.14.1 numpy setuptools \
#       wheel ninja && /opt/sf-cuda/bin/pip install --no-deps nvidia-cuda-cuobjdump   # optional
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${SF_CUDA_PYTHON:-/opt/sf-cuda/bin/python}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}"
export MAX_JOBS="${MAX_JOBS:-1}"
export STYLIZE_FAST_FORCE_CUDA=1
unset STYLIZE_FAST_NO_CUDA || true
export PATH="$CUDA_HOME/bin:$PATH"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

die() { echo "check_cuda_build: $*" >&2; exit 2; }

if [ "${1:-}" = "--emulate" ]; then
    shift
    EMU="${1:-$(mktemp -d /tmp/sf-cuda-emu.XXXXXX)}"
    mkdir -p "$EMU"
    EMU="$(cd "$EMU" && pwd)"
    start=$(date +%s)
    set +e
    (cd "$ROOT" && PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
        "${SF_EMU_PYTHON:-python3}" -m tests.cuda_emulation "$EMU") 2>&1 | tee "$EMU/emulate.log"
    rc=${PIPESTATUS[0]}
    set -e
    echo "check_cuda_build --emulate: exit $rc after $(( $(date +%s) - start ))s; log: $EMU/emulate.log"
    exit $rc
fi

[ -x "$PY" ] || die "no python at $PY (set SF_CUDA_PYTHON; see the header of this script)"
[ -x "$CUDA_HOME/bin/nvcc" ] || die "no nvcc at $CUDA_HOME/bin/nvcc (set CUDA_HOME)"
"$PY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' \
    || die "$PY has a CPU-only torch; a CUDA build of torch is needed to compile"

REPORT_DIR="${1:-$(mktemp -d /tmp/sf-cuda-check.XXXXXX)}"
mkdir -p "$REPORT_DIR"
REPORT_DIR="$(cd "$REPORT_DIR" && pwd)"
WORK="$(mktemp -d /tmp/sf-cuda-build.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# Tracked and untracked-but-not-ignored files: what a fresh checkout would build, no stale .so.
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' \
    | tar --null -T - -cf -) | (cd "$WORK" && tar -xf -)

echo "check_cuda_build: torch $("$PY" -c 'import torch; print(torch.__version__)'), nvcc" \
     "$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')," \
     "archs $TORCH_CUDA_ARCH_LIST, MAX_JOBS=$MAX_JOBS, sources:" \
     $(cd "$WORK" && ls csrc/cuda/*.cu csrc/cuda/*.cpp 2>/dev/null)
start=$(date +%s)
set +e
(cd "$WORK" && "$PY" -m pip wheel -v --no-build-isolation --no-deps . -w "$REPORT_DIR/dist") \
    > "$REPORT_DIR/build.log" 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
if [ $rc -ne 0 ]; then
    grep -E "error|Error" "$REPORT_DIR/build.log" | head -40 >&2 || true
    die "build failed (exit $rc) after ${elapsed}s; full log: $REPORT_DIR/build.log"
fi

# Optional: list the SASS each architecture got in the built library.
CUOBJDUMP="${CUOBJDUMP:-}"
if [ -z "$CUOBJDUMP" ]; then
    for c in "$CUDA_HOME/bin/cuobjdump" \
             $("$PY" -c 'import site; print(" ".join(site.getsitepackages()))' | tr ' ' '\n' \
               | sed 's|$|/nvidia/cu13/bin/cuobjdump|'); do
        if [ -x "$c" ]; then CUOBJDUMP="$c"; break; fi
    done
fi
SO="$(cd "$WORK" && find build -name '_C*.so' | head -1)"
ELF_LIST="$REPORT_DIR/cuobjdump.txt"
if [ -n "$CUOBJDUMP" ] && [ -n "$SO" ]; then
    "$CUOBJDUMP" --list-elf "$WORK/$SO" > "$ELF_LIST" 2>&1 || true
else
    echo "cuobjdump not found (pip install nvidia-cuda-cuobjdump)" > "$ELF_LIST"
fi

set +e
"$PY" "$ROOT/scripts/ptxas_report.py" "$REPORT_DIR" "$elapsed" "$TORCH_CUDA_ARCH_LIST"
status=$?
set -e
echo "SASS in the built library ($ELF_LIST):"
grep -oE "sm_[0-9]+a?" "$ELF_LIST" | sort | uniq -c || cat "$ELF_LIST"
exit $status
