"""Resource report of a CUDA build: the ``ptxas -v`` lines of a build log -> ptxas.tsv (one row
per kernel and architecture) and report.md (one line per kernel template). Exits 1 on a compiler
warning, a spill, a stack frame, a kernel without a resource line or a requested architecture
without kernels.

    python scripts/ptxas_report.py REPORT_DIR BUILD_SECONDS ARCH_LIST

REPORT_DIR holds build.log (written by scripts/check_cuda_build.sh); ARCH_LIST is
TORCH_CUDA_ARCH_LIST ("8.0;9.0").
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")
_WARNING = re.compile(r"(: warning[: ]|\bwarning #|ptxas warning)")


def parse_log(lines: list[str]) -> list[dict]:
    """One dict per compiled kernel: arch, mangled name, regs, stack, spill_st, spill_ld (None
    where ptxas printed no such line)."""
    rows: list[dict] = []
    cur = None
    for line in lines:
        m = _ENTRY.search(line)
        if m:
            cur = {"arch": m.group(2), "mangled": m.group(1), "regs": None, "stack": None,
                   "spill_st": None, "spill_ld": None}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = _FRAME.search(line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
            continue
        m = _REGS.search(line)
        if m:
            cur["regs"] = int(m.group(1))
    return rows


def short_name(demangled: str) -> str:
    """``void stylize_fast::cuda::(anonymous namespace)::k<float, 4>(Args...)`` -> ``k<float, 4>``
    with half types abbreviated."""
    name = demangled.replace("(anonymous namespace)::", "").replace("stylize_fast::cuda::", "")
    name = re.sub(r"^void ", "", re.sub(r"\(.*", "", name))
    return name.replace("__nv_bfloat16", "bf16").replace("__half", "fp16")


def name_kernels(rows: list[dict]) -> None:
    """Sets row["kernel"]: demangled with c++filt where available, else the mangled name."""
    try:
        names = subprocess.run(["c++filt"], input="\n".join(r["mangled"] for r in rows),
                               capture_output=True, text=True).stdout.splitlines()
    except OSError:
        names = []
    if len(names) != len(rows):
        names = [r["mangled"] for r in rows]
    for r, name in zip(rows, names):
        r["kernel"] = short_name(name)


def warnings_in(lines: list[str]) -> list[str]:
    return [line for line in lines if _WARNING.search(line) and "Wno-" not in line]


def requested_archs(arch_list: str) -> set[str]:
    """TORCH_CUDA_ARCH_LIST ("8.0;9.0", "8.0 9.0+PTX") -> {"sm_80", "sm_90"}."""
    return {"sm_" + a.strip().replace(".", "").replace("+PTX", "")
            for a in arch_list.replace(",", ";").replace(" ", ";").split(";") if a.strip()}


def problems_in(rows: list[dict], arch_list: str) -> list[str]:
    problems = []
    for r in rows:
        if r["regs"] is None or r["stack"] is None:
            problems.append(f"{r['arch']} {r['kernel']}: no resource line parsed")
        elif r["stack"] or r["spill_st"] or r["spill_ld"]:
            problems.append(f"{r['arch']} {r['kernel']}: stack frame {r['stack']} B, spill stores "
                            f"{r['spill_st']} B, spill loads {r['spill_ld']} B")
    built = {r["arch"] for r in rows}
    for arch in sorted(requested_archs(arch_list) - built):
        problems.append(f"{arch}: requested in TORCH_CUDA_ARCH_LIST but no kernel was compiled for it")
    if not rows:
        problems.append("no ptxas -v output found (is -Xptxas=-v in setup.py's nvcc flags?)")
    return problems


def tsv(rows: list[dict]) -> str:
    out = ["arch\tkernel\tregisters\tstack_bytes\tspill_store_bytes\tspill_load_bytes"]
    out += [f"{r['arch']}\t{r['kernel']}\t{r['regs']}\t{r['stack']}\t{r['spill_st']}\t{r['spill_ld']}"
            for r in rows]
    return "\n".join(out) + "\n"


def summary(rows: list[dict], elapsed: int, n_warnings: int) -> list[str]:
    """Condensed markdown: one line per kernel template, register range per arch."""
    by_template: dict[str, dict[str, list[dict]]] = collections.OrderedDict()
    for r in rows:
        template = re.sub(r"<.*", "", r["kernel"])
        by_template.setdefault(template, collections.defaultdict(list))[r["arch"]].append(r)
    archs = sorted({r["arch"] for r in rows})
    spilling = sum(1 for r in rows if r["stack"] or r["spill_st"] or r["spill_ld"])
    lines = [f"Build: {elapsed} s wall; archs {', '.join(archs)}; {len(rows)} kernels "
             f"({len(rows) // max(len(archs), 1)} per arch); compiler warnings: {n_warnings}; "
             f"kernels with spills or a stack frame: {spilling}.",
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
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    report_dir, elapsed, arch_list = Path(argv[0]), int(argv[1]), argv[2]
    log = (report_dir / "build.log").read_text(errors="replace").splitlines()
    rows = parse_log(log)
    name_kernels(rows)
    warnings = warnings_in(log)
    problems = problems_in(rows, arch_list)
    (report_dir / "ptxas.tsv").write_text(tsv(rows))
    lines = summary(rows, elapsed, len(warnings))
    (report_dir / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print()
    for w in warnings[:20]:
        print("WARNING:", w)
    for p in problems:
        print("PROBLEM:", p)
    print(f"\nfull per-kernel table: {report_dir}/ptxas.tsv; log: {report_dir}/build.log")
    return 1 if problems or warnings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
