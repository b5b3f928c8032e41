"""Outputs of a run: the console table, CSV files (fixed column order) and one PNG per op."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable

# The one CSV layout of every benchmark here (``stylize-fast bench``, ``benchmarks/bench_*.py``,
# ``benchmarks/readme_results.py``). Times are milliseconds per call; ratios are time / time of
# the case's baseline (ratio_to_baseline: the eager PyTorch code a user would write instead) or of
# a same-size copy (ratio_to_copy), both in the same run and under the same allocator setting.
# allocator: "pinned" (glibc keeps freed memory), "default" (glibc's own behaviour) or "other".
CSV_COLUMNS = (
    "op", "provider", "backend", "shape", "params", "dtype", "layout", "mode", "allocator",
    "status", "median_ms", "p20_ms", "p80_ms", "repeats", "gbps", "gflops",
    "ratio_to_baseline", "ratio_to_copy", "compile_s", "first_call_s", "psnr_db", "peak_mb",
    "note", "baseline", "is_copy",
    # machine columns, the same in every row of one process
    "device", "cpu_model", "threads", "torch_version", "triton_version",
    "stylize_fast_version", "backends_available", "allocator_detail", "command", "timestamp",
)
PROFILE_COLUMNS = (
    "op", "provider", "backend", "shape", "params", "dtype", "layout", "mode", "allocator",
    "category", "self_ms", "fraction", "device", "cpu_model", "threads", "torch_version",
    "allocator_detail", "command", "timestamp",
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


def _truthy(v: object) -> bool:
    return str(v) in ("1", "True", "true")


def case_key(r: dict) -> tuple:
    """What identifies a case (without the allocator setting)."""
    return (r["op"], r["shape"], r.get("params", ""), r["dtype"], r["layout"], r["mode"])


def case_label(r: dict) -> str:
    """A short name of a row's case: ``1x32x256x256 float32 NCHW inference``,
    ``1x128x64x64 3x3/1->128 ...``, ``johnson 1x3x512x512 float32``."""
    params = dict(p.split("=", 1) for p in str(r.get("params", "")).split() if "=" in p)
    if r["op"] == "generator":
        return f"{params.get('arch', '')} {r['shape']} {r['dtype']}".strip()
    if r["op"] == "train":
        layout = "NHWC" if r["layout"] == "channels_last" else "NCHW"
        return f"train step {r['shape']} {r['dtype']} {layout}"
    layout = {"contiguous": "NCHW", "channels_last": "NHWC"}.get(r["layout"], r["layout"])
    mode = {"forward+backward": "fwd+bwd"}.get(r["mode"], r["mode"])
    geometry = ""
    if "kernel" in params:
        geometry = f" {params['kernel']}x{params['kernel']}/{params.get('stride', 1)}" \
                   f"->{params.get('out', '?')}"
    return f"{r['shape']}{geometry} {r['dtype']} {layout} {mode}"


def skipped_summary(rows: Iterable[dict]) -> list[str]:
    """One line per distinct reason a provider did not run (a missing optional package, a
    backend without a device), naming the providers it kept out: never one line per case."""
    reasons: dict[str, list[str]] = {}
    for r in rows:
        status = str(r.get("status", ""))
        if status.startswith("skipped:"):
            names = reasons.setdefault(status[len("skipped:"):].strip(), [])
            if r["provider"] not in names:
                names.append(r["provider"])
    return [f"not measured ({', '.join(names)}): {reason}" for reason, names in reasons.items()]


def format_table(rows: list[dict]) -> str:
    """A plain-text table, one block per (case, allocator setting); providers that did not run
    are summed up after it (:func:`skipped_summary`), errors shown in place."""
    lines: list[str] = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((*case_key(r), r.get("allocator", "")), []).append(r)
    for key, group in groups.items():
        shown = [r for r in group if not str(r.get("status", "")).startswith("skipped:")]
        if not shown:
            continue
        lines.append(f"{key[0]} {case_label(group[0])} [{key[-1]} malloc]")
        lines.append(f"  {'provider':<30} {'median ms':>10} {'p20-p80 ms':>17} {'GB/s':>7} "
                     f"{'x base':>7} {'x copy':>7} {'extra':>12}")
        for r in shown:
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
    return "\n".join(lines + skipped_summary(rows))


def _fmt_ratio(v: object) -> str:
    x = _num(v)
    return "" if math.isnan(x) else f"{x:.2f}"


def format_profile(rows: list[dict]) -> str:
    """Profile split, one line per (case, provider): percent per category."""
    out: dict[tuple, dict[str, float]] = {}
    for r in rows:
        key = (r["shape"], r.get("params", ""), r["dtype"], r["provider"], r.get("allocator", ""))
        out.setdefault(key, {})[r["category"]] = _num(r["fraction"])
    lines = []
    for (shape, params, dtype, prov, alloc), split in out.items():
        parts = " ".join(f"{c} {100 * v:4.0f}%" for c, v in split.items())
        lines.append(f"  {shape} {params} {dtype} [{alloc}] {prov:<28} {parts}")
    return "\n".join(lines)


# Backends whose providers the pictures show: ours, torch.compile, ONNX runtimes; plus the
# baseline (eager PyTorch). The other eager variants (group_norm, BatchNorm, Conv2d's own
# padding, the plain-PyTorch "reference" backend) stay in the CSV and the table.
_OURS = ("cpu", "cuda", "triton")
_PLOTTED_BACKENDS = (*_OURS, "inductor", "onnxruntime", "openvino")
_ALLOCATOR_ORDER = ("pinned", "default", "other", "")


def plotted(r: dict) -> bool:
    """Whether a row is drawn in the op's bar chart."""
    if r.get("status") != "ok" or _truthy(r.get("is_copy")):
        return False
    if _truthy(r.get("baseline")) or r.get("backend") in _PLOTTED_BACKENDS:
        return True
    # A half-precision generator or training case also shows the eager model in its own dtype.
    return r["op"] in ("generator", "train") and r.get("backend") == "torch"


def _ratio_with_spread(r: dict, column: str) -> tuple[float, float, float]:
    """(ratio, low, high): the row's p20 / p80 times over the same reference median."""
    ratio, med = _num(r.get(column)), _num(r.get("median_ms"))
    return ratio, ratio * _num(r.get("p20_ms")) / med, ratio * _num(r.get("p80_ms")) / med


def _provider_order(rows: list[dict]) -> list[str]:
    def rank(r: dict) -> tuple:
        b = r.get("backend", "")
        group = 0 if b in _OURS else 1 if _truthy(r.get("baseline")) else 2 \
            if b == "torch" else 3 if b == "inductor" else 4
        return (group, r["provider"])

    order: list[str] = []
    for r in sorted(rows, key=rank):
        if r["provider"] not in order:
            order.append(r["provider"])
    return order


def _pyplot():
    """matplotlib's pyplot on the file-only backend, or None (with the reason) if missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


PLOT_HINT = "plots need matplotlib (pip install matplotlib); the CSV holds every number"


def plot(rows: list[dict], op: str, path: str) -> str | None:
    """One PNG for ``op``: horizontal bars of each provider's time relative to the eager
    baseline (and, for ops with a copy, relative to a same-size copy), one bar group per case,
    one panel per (ratio, allocator setting); error bars are the provider's p20-p80 over the
    same reference median. Returns the path, or None if there was nothing to draw (or no
    matplotlib: see :data:`PLOT_HINT`)."""
    plt = _pyplot()
    ok = [r for r in rows if r["op"] == op and plotted(r)]
    if plt is None or not ok:
        return None
    metrics = [("ratio_to_baseline", "time / eager PyTorch (lower is better)")]
    if op == "instance_norm" and any(r.get("ratio_to_copy") not in (None, "") for r in ok):
        metrics.append(("ratio_to_copy", "time / same-size copy (1 = memory-bound floor)"))
    allocs = sorted({r.get("allocator", "") for r in ok},
                    key=lambda a: _ALLOCATOR_ORDER.index(a) if a in _ALLOCATOR_ORDER else 9)
    cases: list[tuple] = []
    for r in ok:
        if case_key(r) not in cases:
            cases.append(case_key(r))
    providers = _provider_order(ok)
    colors = {p: plt.cm.tab10(i % 10) for i, p in enumerate(providers)}
    by = {(case_key(r), r.get("allocator", ""), r["provider"]): r for r in ok}
    labels = {case_key(r): case_label(r) for r in ok}
    height = 0.8 / len(providers)
    panel_h = max(1.8, 0.7 + 0.22 * len(cases) * len(providers))  # inches
    legend_h = 0.3 + 0.22 * math.ceil(len(providers) / 4)
    fig_h = panel_h * len(metrics) + legend_h + 0.4
    fig, axes = plt.subplots(len(metrics), len(allocs), squeeze=False, sharey=True,
                             figsize=(6.4 * len(allocs) + 2.0, fig_h))
    for mi, (column, xlabel) in enumerate(metrics):
        # One scale per row, so the allocator settings' panels compare at a glance. The bars
        # set the scale; a whisker longer than the panel is cut at its edge (noisy machine).
        values = [_num(r.get(column)) for r in ok if r.get(column) not in (None, "")]
        log = bool(values) and max(values) / max(min(values), 1e-9) > 30
        right = max(values or [1.0]) * (4.0 if log else 1.45)
        if not log:
            right = max(right, 1.3)
        for ai, alloc in enumerate(allocs):
            ax = axes[mi][ai]
            for ci, case in enumerate(cases):
                for pi, prov in enumerate(providers):
                    r = by.get((case, alloc, prov))
                    if r is None or r.get(column) in (None, ""):
                        continue
                    y = ci + (pi - (len(providers) - 1) / 2) * height
                    v, lo, hi = _ratio_with_spread(r, column)
                    ax.barh(y, v, height=height * 0.9, color=colors[prov],
                            xerr=[[max(v - lo, 0)], [max(hi - v, 0)]], capsize=2,
                            error_kw={"elinewidth": 0.8, "ecolor": "0.25"})
                    at = min(hi, right / (2.0 if log else 1.15))
                    ax.text(at, y, f" {v:.2f}" if v >= 0.1 else f" {v:.2g}", va="center",
                            fontsize=7, clip_on=True)
            ax.axvline(1.0, color="black", linewidth=0.9, linestyle="--")
            if log:
                ax.set_xscale("log")
                ax.set_xlim(min(values) / 2, right)
            else:
                ax.set_xlim(0, right)
            ax.set_yticks(range(len(cases)), [labels[c] for c in cases], fontsize=8)
            ax.set_ylim(len(cases) - 0.5, -0.5)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_title(f"{alloc} malloc" if alloc else "", fontsize=9)
            ax.grid(True, axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[p]) for p in providers]
    fig.legend(handles, providers, loc="upper center", ncol=min(len(providers), 4), fontsize=8,
               frameon=False)
    first = ok[0]
    # fig.text, not suptitle: tight_layout would make room for a suptitle at the top.
    fig.text(0.5, 0.08 / fig_h, f"{op} on {first.get('device', '')}, {first.get('threads', '')} "
             f"threads, torch {first.get('torch_version', '')} (bars: median, whiskers: p20-p80)",
             fontsize=9, ha="center", va="bottom")
    fig.tight_layout(rect=(0, 0.35 / fig_h, 1, 1 - legend_h / fig_h))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _size(shape: str) -> int:
    return int(str(shape).split("x")[-1])


def sweeps(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Case families that differ only in image size (same op, batch, channels, params, dtype,
    layout, mode, allocator) with at least three sizes: those get lines."""
    families: dict[tuple, list[dict]] = {}
    for r in rows:
        if not plotted(r):
            continue
        n_c = "x".join(str(r["shape"]).split("x")[:2])
        key = (r["op"], n_c, r.get("params", ""), r["dtype"], r["layout"], r["mode"],
               r.get("allocator", ""))
        families.setdefault(key, []).append(r)
    return {k: v for k, v in families.items() if len({_size(r["shape"]) for r in v}) >= 3}


def plot_sweeps(rows: list[dict], op: str, path: str) -> str | None:
    """Lines of time relative to eager against image size, one panel per sweep of ``op``
    (see :func:`sweeps`); None when ``op`` has no sweep."""
    plt = _pyplot()
    found = {k: v for k, v in sweeps(rows).items() if k[0] == op}
    if plt is None or not found:
        return None
    cols = min(2, len(found))
    nrows = math.ceil(len(found) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 4 * nrows), squeeze=False)
    for ax, (key, family) in zip(axes.flat, found.items()):
        for prov in _provider_order(family):
            pts = sorted((_size(r["shape"]), *_ratio_with_spread(r, "ratio_to_baseline"))
                         for r in family if r["provider"] == prov)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=prov)
        ax.axhline(1.0, color="black", linewidth=0.9, linestyle="--")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({_size(r["shape"]) for r in family}))
        ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("image side (pixels)")
        ax.set_ylabel("time / eager PyTorch")
        ax.set_title(f"{case_label(family[0]).replace(family[0]['shape'], key[1] + 'xS')} "
                     f"[{key[-1]} malloc]", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(found):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
