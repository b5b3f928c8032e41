"""Outputs of a run: the console table, CSV files (fixed column order) and one PNG per op."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable

# Column order of results.csv. Times are milliseconds per call; ratios are time / time of the
# case's baseline (ratio_to_baseline) or of a same-size copy in the same run (ratio_to_copy).
CSV_COLUMNS = (
    "op", "provider", "backend", "shape", "params", "dtype", "layout", "mode", "status",
    "median_ms", "p20_ms", "p80_ms", "repeats", "number", "gbps", "gflops",
    "ratio_to_baseline", "ratio_to_copy", "compile_s", "first_call_s", "psnr_db",
    "baseline", "is_copy",
    # machine columns, the same in every row of one process
    "device", "cpu_model", "threads", "torch_version", "triton_version",
    "stylize_fast_version", "backends_available", "allocator", "timestamp",
)
PROFILE_COLUMNS = (
    "op", "provider", "backend", "shape", "params", "dtype", "layout", "mode", "category",
    "self_ms", "fraction", "device", "cpu_model", "threads", "torch_version", "allocator",
    "timestamp",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.6g}"
    return str(v)


def write_csv(path: str, rows: Iterable[dict], columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    """Write ``rows`` (dicts; missing keys blank, unknown keys dropped) with a header."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in columns])
    return path


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(v: object) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _short_alloc(a: str) -> str:
    return "pinned" if str(a).startswith("pinned") else "default"


def format_table(rows: list[dict]) -> str:
    """A plain-text table, one block per case; skipped providers listed with their reason."""
    lines: list[str] = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["op"], r["shape"], r.get("params", ""), r["dtype"], r["layout"], r["mode"],
               r.get("allocator", ""))
        groups.setdefault(key, []).append(r)
    multi_alloc = len({k[-1] for k in groups if k[0] == "generator"}) > 1
    for (op, shape, params, dtype, layout, mode, alloc), group in groups.items():
        title = f"{op} {shape} {params} {dtype} {layout} {mode}".replace("  ", " ")
        if op == "generator" and multi_alloc:
            title += f" [malloc {_short_alloc(alloc)}]"
        lines.append(title)
        lines.append(f"  {'provider':<30} {'median ms':>10} {'p20-p80 ms':>17} {'GB/s':>7} "
                     f"{'x base':>7} {'x copy':>7} {'extra':>12}")
        for r in group:
            if r.get("status") != "ok":
                lines.append(f"  {r['provider']:<30} {r.get('status', '')}")
                continue
            extra = ""
            if r.get("compile_s") not in (None, ""):
                extra = f"compile {_num(r['compile_s']):.1f}s"
            elif r.get("psnr_db") not in (None, ""):
                p = _num(r["psnr_db"])
                extra = "PSNR inf" if math.isinf(p) else f"PSNR {p:.1f}"
            gb = _num(r.get("gbps"))
            lines.append(
                f"  {r['provider']:<30} {_num(r['median_ms']):>10.3f} "
                f"{_num(r['p20_ms']):>8.3f}-{_num(r['p80_ms']):<8.3f} "
                f"{'' if math.isnan(gb) else f'{gb:.1f}':>7} "
                f"{_fmt_ratio(r.get('ratio_to_baseline')):>7} "
                f"{_fmt_ratio(r.get('ratio_to_copy')):>7} {extra:>12}")
    return "\n".join(lines)


def _fmt_ratio(v: object) -> str:
    x = _num(v)
    return "" if math.isnan(x) else f"{x:.2f}"


def format_profile(rows: list[dict]) -> str:
    """Profile split, one line per (case, provider): percent per category."""
    out: dict[tuple, dict[str, float]] = {}
    for r in rows:
        key = (r["shape"], r.get("params", ""), r["dtype"], r["provider"],
               _short_alloc(r.get("allocator", "")))
        out.setdefault(key, {})[r["category"]] = _num(r["fraction"])
    lines = []
    for (shape, params, dtype, prov, alloc), split in out.items():
        parts = " ".join(f"{c} {100 * v:4.0f}%" for c, v in split.items())
        lines.append(f"  {shape} {params} {dtype} [{alloc}] {prov:<28} {parts}")
    return "\n".join(lines)


def _label(r: dict, multi_alloc: bool) -> str:
    label = r["provider"]
    if multi_alloc and r["op"] == "generator":
        label += f" [{_short_alloc(r.get('allocator', ''))} malloc]"
    return label


def plot(rows: list[dict], op: str, path: str) -> str | None:
    """One PNG for ``op``: a panel per (dtype, layout, mode, params-family), x = input size
    in elements, y = GB/s when the op has a traffic model (higher is better; the copy line is
    the memory limit), else ms per call (lower is better); one line per provider."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["op"] == op and r.get("status") == "ok"]
    if not ok:
        return None
    use_gbps = op == "instance_norm"
    multi_alloc = len({_short_alloc(r.get("allocator", "")) for r in ok}) > 1
    panels: dict[tuple, list[dict]] = {}
    for r in ok:
        family = r.get("params", "") if op == "generator" else ""
        panels.setdefault((r["dtype"], r["layout"], r["mode"], family), []).append(r)
    keys = sorted(panels)
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.6 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        lines: dict[str, list[tuple[float, float, float, float]]] = {}
        for r in panels[key]:
            size = 1
            for s in str(r["shape"]).split("x"):
                size *= int(s)
            if use_gbps:
                if r.get("gbps") in (None, ""):
                    continue
                y = _num(r["gbps"])
                # GB/s spread from the time spread (inverse: p80 time -> low GB/s).
                lo = y * _num(r["median_ms"]) / _num(r["p80_ms"])
                hi = y * _num(r["median_ms"]) / _num(r["p20_ms"])
            else:
                y, lo, hi = _num(r["median_ms"]), _num(r["p20_ms"]), _num(r["p80_ms"])
            lines.setdefault(_label(r, multi_alloc), []).append((size, y, lo, hi))
        for label, pts in sorted(lines.items()):
            pts.sort()
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            style = {"linestyle": "--", "color": "black"} if label == "copy" else {}
            (line,) = ax.plot(xs, ys, marker="o", label=label, **style)
            ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], alpha=0.15,
                            color=line.get_color())
        ax.set_xscale("log")
        if not use_gbps:
            ax.set_yscale("log")
        ax.set_title(" ".join(k for k in key if k), fontsize=9)
        ax.set_xlabel("input elements")
        ax.set_ylabel("GB/s (higher is better)" if use_gbps else "ms per call (lower is better)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    first = ok[0]
    fig.suptitle(f"{op} on {first.get('device', '')}, {first.get('threads', '')} threads, "
                 f"torch {first.get('torch_version', '')}", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _ms(v: object) -> str:
    x = _num(v)
    if math.isnan(x):
        return ""
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.3g}"


def markdown_table(rows: list[dict], *, ops: Iterable[str] | None = None,
                   skipped: bool = False) -> str:
    """A Markdown table of ``rows`` (e.g. from :func:`read_csv`) for docs: one line per
    (case, provider), ratios to the case's baseline and to the same-size copy."""
    wanted = None if ops is None else set(ops)
    out = ["| case | provider | median ms | p20–p80 ms | GB/s | × baseline | × copy | note |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if wanted is not None and r["op"] not in wanted:
            continue
        case = " ".join(str(x) for x in (r["op"], r["shape"], r.get("params", ""), r["dtype"],
                                         r["layout"], r["mode"]) if x)
        if r["op"] == "generator":
            case += f" [{_short_alloc(r.get('allocator', ''))} malloc]"
        if r.get("status") != "ok":
            if skipped:
                out.append(f"| {case} | {r['provider']} | | | | | | {r.get('status', '')} |")
            continue
        note = []
        if r.get("compile_s") not in (None, ""):
            note.append(f"compile {_num(r['compile_s']):.0f} s")
        if r.get("psnr_db") not in (None, ""):
            p = _num(r["psnr_db"])
            note.append("PSNR ∞" if math.isinf(p) else f"PSNR {p:.1f} dB")
        gb = _num(r.get("gbps"))
        name = f"**{r['provider']}**" if str(r.get("baseline")) in ("1", "True") else \
            r["provider"]
        out.append(f"| {case} | {name} | {_ms(r['median_ms'])} | "
                   f"{_ms(r['p20_ms'])}–{_ms(r['p80_ms'])} | "
                   f"{'' if math.isnan(gb) else f'{gb:.2f}'} | "
                   f"{_fmt_ratio(r.get('ratio_to_baseline'))} | "
                   f"{_fmt_ratio(r.get('ratio_to_copy'))} | {', '.join(note)} |")
    return "\n".join(out)


if __name__ == "__main__":
    # python -m stylize_fast.bench.report results.csv [op ...]: a Markdown table for docs.
    import sys

    print(markdown_table(read_csv(sys.argv[1]), ops=sys.argv[2:] or None))
