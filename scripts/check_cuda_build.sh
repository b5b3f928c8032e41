#!/usr/bin/env bash
# Compile the CUDA kernels (csrc/cuda/*.cu + *.cpp) without a GPU and print the ptxas resource
# report: registers, spill bytes and stack frame of every kernel for every architecture.
# Exits non-zero on a failed build, any compiler warning, any spill, any stack frame, or a
# requested architecture without SASS.
#
#   scripts/check_cuda_build.sh [REPORT_DIR]
#   scripts/check_cuda_build.sh --emulate [REPORT_DIR]
#
# --emulate runs the device code instead, on the CPU: instance_norm_kernels.cu is compiled by the
# host compiler against csrc/cuda/cuda_host_emulation.h (blocks in sequence, their threads as OS
# threads, __syncthreads / __shfl_down_sync emulated) with the system python's CPU torch, and
# every schedule (on chip / looped / split, NCHW / channels_last, vector widths 1 / 2 / 4 / 8,
# four dtypes, affine none / (C,) / (N, C), three activations, forward and backward) is compared
# with the float64 reference. Catches indexing, reduction and synchronisation-order bugs; not
# timing, not the real hardware's rounding of fast-math intrinsics. (~3 min build, ~3-8 min run.)
#
# REPORT_DIR (default: a temp dir, printed) receives build.log, ptxas.tsv, report.md, and the
# wheel. The build happens in a temporary copy of the source tree, so /work/main's in-place
# stylize_fast/_C*.so and _build_info.json are never touched.
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
    mkdir -p "$EMU/inc"
    EMU="$(cd "$EMU" && pwd)"
    SYS_PY="${SF_EMU_PYTHON:-python3}"
    for h in cuda_runtime.h cuda_runtime_api.h cuda_fp16.h cuda_bf16.h; do
        echo '#include "cuda_host_emulation.h"' > "$EMU/inc/$h"
    done
    cp "$ROOT/csrc/cuda/cuda_host_emulation.h" "$EMU/inc/"
    # kernel launches k<<<grid, block, smem, stream>>>(args); -> sf_emu::launch([&]{k(args);}, ...)
    "$SYS_PY" - "$ROOT/csrc/cuda/instance_norm_kernels.cu" "$EMU/kernels_emu.cpp" <<'PYEOF'
import re, sys
text = open(sys.argv[1]).read()
pattern = re.compile(r"([A-Za-z_]\w*(?:<[^<>;]*>)?)<<<(.+?)>>>\((.*?)\);", re.S)
text, count = pattern.subn(
    lambda m: f"::sf_emu::launch([&] {{ {m.group(1)}({m.group(3)}); }}, {m.group(2)});", text)
assert count > 0, "no kernel launches found"
open(sys.argv[2], "w").write(text)
print(f"check_cuda_build --emulate: {count} kernel launches rewritten")
PYEOF
    cat > "$EMU/emu_binding.cpp" <<'CPPEOF'
// CPU driver for the emulated kernels: the logic of csrc/cuda/instance_norm_cuda.cpp (layout,
// vector width, plan, workspace) on CPU tensors, with the SM count as an argument so that small
// shapes reach every schedule.
#include <torch/extension.h>

#include "instance_norm_kernels.h"

namespace sfc = stylize_fast::cuda;

static sfc::ScalarKind kind_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return sfc::ScalarKind::kFloat32;
    case at::kHalf: return sfc::ScalarKind::kFloat16;
    case at::kBFloat16: return sfc::ScalarKind::kBFloat16;
    default: return sfc::ScalarKind::kFloat64;
  }
}
static sfc::Shape shape_of(const at::Tensor& x, at::MemoryFormat fmt) {
  sfc::Shape s;
  s.N = x.size(0); s.C = x.size(1); s.HW = x.size(2) * x.size(3);
  s.layout = fmt == at::MemoryFormat::ChannelsLast ? sfc::Layout::kNHWC : sfc::Layout::kNCHW;
  return s;
}
static int64_t stride_n(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->dim() == 2 ? t->size(1) : 0;
}
static const void* ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr() : nullptr;
}

// x is used as given: its data pointer decides the vector width. Returns the schedule too.
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::string> fwd(
    at::Tensor x, std::optional<at::Tensor> w, std::optional<at::Tensor> b, double eps,
    int64_t act, double slope, int64_t sm) {
  const auto fmt = x.suggest_memory_format();
  TORCH_CHECK(x.is_contiguous(fmt), "emulation driver: input must be dense");
  auto y = at::empty_like(x, fmt);
  auto so = x.options().dtype(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  auto mean = at::empty({x.size(0), x.size(1)}, so), rstd = at::empty({x.size(0), x.size(1)}, so);
  const auto s = shape_of(x, fmt);
  const auto kind = kind_of(x);
  const void* ptrs[] = {x.data_ptr(), y.data_ptr()};
  const auto plan = sfc::plan_instance_norm(
      s, sfc::choose_vec(kind, s.layout == sfc::Layout::kNCHW ? s.HW : s.C, ptrs, 2), int(sm));
  auto ws = at::empty({int64_t(sfc::workspace_bytes(s, plan, kind, 3)) + 1}, x.options().dtype(at::kByte));
  sfc::ForwardArgs a{};
  a.input = x.data_ptr(); a.output = y.data_ptr(); a.mean = mean.data_ptr(); a.rstd = rstd.data_ptr();
  a.weight = ptr(w); a.bias = ptr(b); a.weight_stride_n = stride_n(w); a.bias_stride_n = stride_n(b);
  a.eps = eps; a.activation = int(act); a.negative_slope = slope; a.workspace = ws.data_ptr();
  TORCH_CHECK(sfc::instance_norm_forward(kind, s, plan, a, nullptr) == cudaSuccess, "launch failed");
  return {y, mean, rstd, std::string(sfc::schedule_name(plan.schedule)) + "/vec" + std::to_string(plan.vec)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bwd(
    at::Tensor dz, at::Tensor x, std::optional<at::Tensor> w, std::optional<at::Tensor> b,
    at::Tensor mean, at::Tensor rstd, int64_t act, double slope, std::vector<bool> mask, int64_t sm) {
  const auto fmt = x.suggest_memory_format();
  TORCH_CHECK(x.is_contiguous(fmt) && dz.is_contiguous(fmt), "emulation driver: dense inputs");
  const auto s = shape_of(x, fmt);
  const auto kind = kind_of(x);
  auto dx = mask[0] ? at::empty_like(x, fmt) : x.new_empty({0});
  auto dw = mask[1] && w.has_value() ? at::empty_like(*w) : x.new_empty({0});
  auto db = mask[2] && b.has_value() ? at::empty_like(*b) : x.new_empty({0});
  auto sums = at::empty({s.N, s.C, 2}, mean.options());
  const void* ptrs[] = {x.data_ptr(), dz.data_ptr(), mask[0] ? dx.data_ptr() : nullptr};
  const auto plan = sfc::plan_instance_norm(
      s, sfc::choose_vec(kind, s.layout == sfc::Layout::kNCHW ? s.HW : s.C, ptrs, 3), int(sm));
  auto ws = at::empty({int64_t(sfc::workspace_bytes(s, plan, kind, 2)) + 1}, x.options().dtype(at::kByte));
  sfc::BackwardArgs a{};
  a.grad_output = dz.data_ptr(); a.input = x.data_ptr(); a.mean = mean.data_ptr(); a.rstd = rstd.data_ptr();
  a.weight = ptr(w); a.bias = ptr(b); a.weight_stride_n = stride_n(w); a.bias_stride_n = stride_n(b);
  a.activation = int(act); a.negative_slope = slope;
  a.grad_input = mask[0] ? dx.data_ptr() : nullptr; a.sums = sums.data_ptr();
  a.grad_weight = dw.numel() ? dw.data_ptr() : nullptr; a.grad_bias = db.numel() ? db.data_ptr() : nullptr;
  a.workspace = ws.data_ptr();
  TORCH_CHECK(sfc::instance_norm_backward(kind, s, plan, a, nullptr) == cudaSuccess, "launch failed");
  return {dx, dw, db};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwd", &fwd);
  m.def("bwd", &bwd);
}
CPPEOF
    cat > "$EMU/run_emu.py" <<'PYEOF'
"""Emulated CUDA kernels vs the float64 reference, every schedule, forward and backward."""
import itertools
import sys

import torch
from torch.utils.cpp_extension import load

from stylize_fast import testing
from stylize_fast.ops import instance_norm_reference as ref

emu_dir, src_dir = sys.argv[1], sys.argv[2]
emu = load(name="sf_cuda_emu", sources=[f"{emu_dir}/emu_binding.cpp", f"{emu_dir}/kernels_emu.cpp"],
           extra_cflags=["-std=c++20", "-O1", "-Wno-unknown-pragmas", f"-I{emu_dir}/inc",
                         f"-I{src_dir}"],
           extra_ldflags=["-lpthread"], build_directory=emu_dir)
SM = 2  # plans for a 2-SM GPU: split below 4 blocks, so small shapes reach every schedule
torch.manual_seed(0)

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


failures = cases = 0
seen = set()
for (shape, layout, expect), dtype in itertools.product(SHAPES, DTYPES):
    combos = [(a, f, s) for a in (0, 1, 2) for f in ("none", "channel", "sample")
              for s in (False, True)]
    if shape[2] * shape[3] > 4000:  # large planes are slow in emulation: fewer combinations
        combos = [(1, "channel", False), (2, "sample", True), (0, "none", False)]
    for act, affine, shift in combos:
        cases += 1
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
        try:
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
                testing.assert_close(g, e, name=name, atol=tol["atol"] * 4 * scale,
                                     rtol=tol["rtol"] * 4)
            if w is not None:  # dgamma / dbeta without dx: the sums-only path, same bits
                dx0, dw0, db0 = emu.bwd(dz, x, w, b, mean, rstd, act, 0.1, [False, True, True], SM)
                assert dx0.numel() == 0 and torch.equal(dw0, dw) and torch.equal(db0, db), \
                    "grads without dx differ from grads with dx"
        except Exception as exc:  # noqa: BLE001 (report every failing case)
            failures += 1
            print(f"FAIL {shape} {layout} {dtype} act={act} affine={affine} misaligned={shift}: "
                  f"{type(exc).__name__}: {exc}"[:1500], flush=True)
print("schedules reached (layout, schedule/vector width):")
for item in sorted(seen):
    print("  ", *item)
print(f"check_cuda_build --emulate: {cases} cases, {failures} failed")
sys.exit(1 if failures else 0)
PYEOF
    start=$(date +%s)
    set +e
    "$SYS_PY" "$EMU/run_emu.py" "$EMU" "$ROOT/csrc/cuda" 2>&1 | tee "$EMU/emulate.log"
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
"$PY" - "$REPORT_DIR" "$elapsed" "$TORCH_CUDA_ARCH_LIST" <<'PYEOF'
"""Turn the ptxas -v lines of build.log into ptxas.tsv + report.md; exit 1 on any problem."""
import collections
import re
import subprocess
import sys

report_dir, elapsed, arch_list = sys.argv[1], int(sys.argv[2]), sys.argv[3]
log = open(f"{report_dir}/build.log", errors="replace").read().splitlines()

rows, cur = [], None
for line in log:
    m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'", line)
    if m:
        cur = {"arch": m.group(2), "mangled": m.group(1), "regs": None, "stack": None,
               "spill_st": None, "spill_ld": None}
        rows.append(cur)
        continue
    if cur is None:
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                  line)
    if m:
        cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
        continue
    m = re.search(r"Used (\d+) registers", line)
    if m:
        cur["regs"] = int(m.group(1))

names = subprocess.run(["c++filt"], input="\n".join(r["mangled"] for r in rows),
                       capture_output=True, text=True).stdout.splitlines()
if len(names) != len(rows):
    names = [r["mangled"] for r in rows]
for r, name in zip(rows, names):
    name = name.replace("(anonymous namespace)::", "").replace("stylize_fast::cuda::", "")
    name = re.sub(r"^void ", "", re.sub(r"\(.*", "", name))
    r["kernel"] = name.replace("__nv_bfloat16", "bf16").replace("__half", "fp16")

warnings = [l for l in log if re.search(r"(: warning[: ]|\bwarning #|ptxas warning)", l)
            and "Wno-" not in l]
problems = []
for r in rows:
    if r["regs"] is None or r["stack"] is None:
        problems.append(f"{r['arch']} {r['kernel']}: no resource line parsed")
    elif r["stack"] or r["spill_st"] or r["spill_ld"]:
        problems.append(f"{r['arch']} {r['kernel']}: stack frame {r['stack']} B, spill stores "
                        f"{r['spill_st']} B, spill loads {r['spill_ld']} B")
wanted = {"sm_" + a.strip().replace(".", "").replace("+PTX", "")
          for a in arch_list.replace(",", ";").replace(" ", ";").split(";") if a.strip()}
built = {r["arch"] for r in rows}
for arch in sorted(wanted - built):
    problems.append(f"{arch}: requested in TORCH_CUDA_ARCH_LIST but no kernel was compiled for it")
if not rows:
    problems.append("no ptxas -v output found (is -Xptxas=-v in setup.py's nvcc flags?)")

with open(f"{report_dir}/ptxas.tsv", "w") as f:
    f.write("arch\tkernel\tregisters\tstack_bytes\tspill_store_bytes\tspill_load_bytes\n")
    for r in rows:
        f.write(f"{r['arch']}\t{r['kernel']}\t{r['regs']}\t{r['stack']}\t{r['spill_st']}\t"
                f"{r['spill_ld']}\n")

# Condensed: one line per kernel template, register range over dtypes / vector widths per arch.
by_template = collections.OrderedDict()
for r in rows:
    template = re.sub(r"<.*", "", r["kernel"])
    by_template.setdefault(template, collections.defaultdict(list))[r["arch"]].append(r)
archs = sorted(built)
lines = [f"Build: {elapsed} s wall; archs {', '.join(archs)}; {len(rows)} kernels "
         f"({len(rows) // max(len(archs), 1)} per arch); compiler warnings: {len(warnings)}; "
         f"kernels with spills or a stack frame: "
         f"{sum(1 for r in rows if r['stack'] or r['spill_st'] or r['spill_ld'])}.",
         "",
         "| kernel | instances | " + " | ".join(f"registers {a}" for a in archs)
         + " | max stack / spill bytes |",
         "|---|---|" + "---|" * len(archs) + "---|"]
for template, per_arch in by_template.items():
    cells, worst, count = [], 0, 0
    for a in archs:
        rs = per_arch.get(a, [])
        count = max(count, len(rs))
        regs = [x["regs"] or 0 for x in rs]
        cells.append(f"{min(regs)}–{max(regs)}" if regs and min(regs) != max(regs)
                     else (str(regs[0]) if regs else "—"))
        worst = max([worst] + [max(x["stack"] or 0, x["spill_st"] or 0, x["spill_ld"] or 0)
                               for x in rs])
    lines.append(f"| `{template}` | {count} | " + " | ".join(cells) + f" | {worst} |")
with open(f"{report_dir}/report.md", "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
print()
for w in warnings[:20]:
    print("WARNING:", w)
for p in problems:
    print("PROBLEM:", p)
print(f"\nfull per-kernel table: {report_dir}/ptxas.tsv; log: {report_dir}/build.log")
sys.exit(1 if problems or warnings else 0)
PYEOF
status=$?
set -e
echo "SASS in the built library ($ELF_LIST):"
grep -oE "sm_[0-9]+a?" "$ELF_LIST" | sort | uniq -c || cat "$ELF_LIST"
exit $status
