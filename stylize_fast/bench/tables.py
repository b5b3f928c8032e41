"""Markdown results tables generated from committed CSVs (``docs/results/NAME.csv``).

A markdown file marks where each table goes::

    <!-- bench-table:instance_norm -->
    (generated: the command and machine line, then the table)
    <!-- /bench-table:instance_norm -->

and ``python -m stylize_fast.bench.tables --update README.md`` rewrites the text between each pair
of markers from ``docs/results/NAME.csv`` (``--results DIR`` for another folder; ``--check``
changes nothing and exits 1 if a table is out of date). The CSVs come from
``python benchmarks/readme_results.py --output docs/results``.

Columns are chosen per area (``instance_norm``, ``padded_conv``, ``generators``, ``training``; any other NAME
gets every drawn provider's ratio to eager): ratios to the eager PyTorch baseline (and to a
same-size copy for the norm), one line per case and allocator setting.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable

from . import report

MARKERS = re.compile(
    r"(?P<open><!-- bench-table:(?P<name>[\w.-]+) -->)(?P<body>.*?)"
    r"(?P<close><!-- /bench-table:(?P=name) -->)", re.S)
DEFAULT_RESULTS = os.path.join("docs", "results")

Row = dict
Cell = Callable[[list[Row]], str]


def _num(v: object) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _ratio(v: object) -> str:
    x = _num(v)
    if math.isnan(x):
        return "—"
    return f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


def _ms(v: object) -> str:
    x = _num(v)
    if math.isnan(x):
        return "—"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _find(group: list[Row], pick: Callable[[Row], bool]) -> Row | None:
    return next((r for r in group if r.get("status") == "ok" and pick(r)), None)


def _is_baseline(r: Row) -> bool:
    return str(r.get("baseline")) in ("1", "True")


def _ours(rows: list[Row]) -> list[str]:
    """Our providers present in ``rows`` (``sf-cpu``, ``sf-cuda``, ``sf-triton``; ``fused``)."""
    names: list[str] = []
    for r in rows:
        if r.get("status") == "ok" and r.get("backend") in ("cpu", "cuda", "triton") \
                and r["provider"] not in names:
            names.append(r["provider"])
    return names


def _provider_cell(name: str, column: str = "ratio_to_baseline",
                   fmt: Callable[[object], str] = _ratio) -> Cell:
    def cell(group: list[Row]) -> str:
        r = _find(group, lambda r: r["provider"] == name)
        return fmt(r.get(column)) if r else "—"

    return cell


def _backend_cell(backend: str, column: str = "ratio_to_baseline") -> Cell:
    def cell(group: list[Row]) -> str:
        r = _find(group, lambda r: r.get("backend") == backend)
        return _ratio(r.get(column)) if r else "—"

    return cell


def _baseline_cell(column: str, fmt: Callable[[object], str] = _ratio) -> Cell:
    def cell(group: list[Row]) -> str:
        r = _find(group, _is_baseline)
        return fmt(r.get(column)) if r else "—"

    return cell


def _case_columns(name: str) -> list[tuple[str, Cell]]:
    def field(key: str, mapping: dict | None = None) -> Cell:
        return lambda g: (mapping or {}).get(g[0].get(key, ""), g[0].get(key, ""))

    layout = {"contiguous": "NCHW", "channels_last": "NHWC"}
    malloc = ("malloc", field("allocator"))
    if name == "generators":
        arch = lambda g: report.case_label(g[0]).split(" ")[0]
        return [("model", arch), ("input", field("shape")), ("dtype", field("dtype")), malloc]
    if name == "training":
        arch = lambda g: dict(p.split("=", 1) for p in str(g[0].get("params", "")).split()
                              if "=" in p).get("arch", "")
        return [("generator", arch), ("batch", field("shape")), ("dtype", field("dtype")),
                malloc]
    if name == "padded_conv":
        layer = lambda g: report.case_label(g[0]).rsplit(" ", 3)[0]
        return [("layer", layer), ("layout", field("layout", layout)), ("mode", field("mode")),
                ("algorithm (ours)", field("note")), malloc]
    return [("shape", field("shape")), ("dtype", field("dtype")),
            ("layout", field("layout", layout)), ("mode", field("mode")), malloc]


def columns(name: str, rows: list[Row]) -> list[tuple[str, Cell]]:
    """(header, cell function) of each column of area ``name``'s table."""
    ok = [r for r in rows if r.get("status") == "ok"]
    has = lambda backend: any(r.get("backend") == backend for r in ok)
    cols = _case_columns(name)
    if name == "instance_norm":
        for p in _ours(ok):
            cols += [(f"{p} × eager", _provider_cell(p)),
                     (f"{p} × copy", _provider_cell(p, "ratio_to_copy"))]
        cols.append(("eager × copy", _baseline_cell("ratio_to_copy")))
        if has("inductor"):
            cols.append(("torch.compile × eager", _backend_cell("inductor")))
        cols.append(("eager ms", _baseline_cell("median_ms", _ms)))
    elif name == "padded_conv":
        for p in _ours(ok):
            cols.append((f"{p} × F.pad+conv2d", _provider_cell(p)))
        cols.append(("Conv2d(padding_mode) ×", _provider_cell("Conv2d(padding_mode)")))
        if has("inductor"):
            cols.append(("torch.compile ×", _backend_cell("inductor")))
        if any(r.get("peak_mb") not in (None, "") for r in ok):
            for p in _ours(ok):
                cols.append((f"peak MB {p}", _provider_cell(p, "peak_mb", _ms)))
            cols.append(("peak MB F.pad+conv2d", _baseline_cell("peak_mb", _ms)))
        cols.append(("F.pad+conv2d ms", _baseline_cell("median_ms", _ms)))
    elif name == "generators":
        cols.append(("fused × eager fp32", _provider_cell("fused")))
        if any(r["provider"] == "fused per-layer norm" for r in ok):
            cols.append(("per-layer norm ×", _provider_cell("fused per-layer norm")))
        if any(r.get("peak_mb") not in (None, "") for r in ok):
            cols += [("peak MB fused", _provider_cell("fused", "peak_mb", _ms)),
                     ("peak MB per-layer", _provider_cell("fused per-layer norm", "peak_mb",
                                                          _ms))]
        cols.append(("eager same dtype ×", lambda g: _provider_cell("instance")(g)
                     if g[0]["dtype"] != "float32" else "1.00"))
        if has("inductor"):
            cols.append(("torch.compile+freezing ×", _backend_cell("inductor")))
        for backend, title in (("onnxruntime", "onnxruntime ×"), ("openvino", "OpenVINO ×")):
            if has(backend):
                cols.append((title, _backend_cell(backend)))
        cols.append(("fused PSNR dB", lambda g: _ms((_find(g, lambda r: r["provider"] == "fused")
                                                     or {}).get("psnr_db"))))
        cols.append(("eager fp32 ms", _baseline_cell("median_ms", _ms)))
    elif name == "training":
        names = [r["provider"] for r in ok if not _is_baseline(r)]
        for p in dict.fromkeys(names):
            cols.append((f"{p} ×", _provider_cell(p)))
        if any(r.get("peak_mb") not in (None, "") for r in ok):
            for p in dict.fromkeys(names):
                cols.append((f"peak MB {p}", _provider_cell(p, "peak_mb", _ms)))
            cols.append(("peak MB examples", _baseline_cell("peak_mb", _ms)))
        cols.append(("examples fp32 ms", _baseline_cell("median_ms", _ms)))
    else:
        names = []
        for r in ok:
            if report.plotted(r) and r["provider"] not in names:
                names.append(r["provider"])
        cols += [(f"{p} ×", _provider_cell(p)) for p in names]
    return cols


def machine_line(rows: list[Row]) -> str:
    """The command and the machine, stated once above a table."""
    r = rows[0]
    commands = sorted({r.get("command", "") for r in rows if r.get("command")})
    # The day only: README describes the package, not a session (the CSV keeps the full time).
    stamps = sorted(r.get("timestamp", "") for r in rows if r.get("timestamp"))
    when = f"measured {stamps[0][:10]}" if stamps else "date not recorded"
    cmd = "; ".join(f"`{c}`" for c in commands) or "(command not recorded)"
    return (f"{cmd} — {r.get('cpu_model', '?')}, {r.get('device', '?')}, "
            f"{r.get('threads', '?')} threads, torch {r.get('torch_version', '?')}, "
            f"stylize_fast {r.get('stylize_fast_version', '?')}, {when}. Ratios of medians "
            "measured in one interleaved run (lower is faster); malloc: pinned = glibc keeps "
            "freed memory, default = glibc's own behaviour.")


def render(name: str, rows: list[Row]) -> str:
    """The command/machine line and the table of area ``name`` from CSV ``rows``."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((*report.case_key(r), r.get("allocator", "")), []).append(r)
    groups = {k: g for k, g in groups.items() if any(r.get("status") == "ok" for r in g)}
    # Each case's allocator settings on adjacent lines, cases in the order they ran.
    first: dict[tuple, int] = {}
    for i, key in enumerate(groups):
        first.setdefault(key[:-1], i)
    order = {"pinned": 0, "default": 1}
    groups = dict(sorted(groups.items(), key=lambda kv: (first[kv[0][:-1]],
                                                          order.get(kv[0][-1], 2))))
    if not groups:
        return f"(no measured rows in {name}.csv)"
    cols = columns(name, rows)
    lines = [machine_line(rows), "",
             "| " + " | ".join(h for h, _ in cols) + " |",
             "|" + "|".join("---" if i < len(_case_columns(name)) else "---:"
                            for i in range(len(cols))) + "|"]
    for group in groups.values():
        lines.append("| " + " | ".join(str(cell(group)) for _, cell in cols) + " |")
    return "\n".join(lines)


def update_text(text: str, results: str = DEFAULT_RESULTS) -> tuple[str, list[str], list[str]]:
    """``text`` with every marked table regenerated; returns (new text, names updated, problems
    as one line each: a marker whose CSV is missing keeps its old body)."""
    names: list[str] = []
    problems: list[str] = []

    def replace(m: re.Match) -> str:
        name = m.group("name")
        path = os.path.join(results, f"{name}.csv")
        if not os.path.isfile(path):
            problems.append(f"bench-table:{name}: no {path} (make it with "
                            f"python benchmarks/readme_results.py --output {results})")
            return m.group(0)
        names.append(name)
        return f"{m.group('open')}\n{render(name, report.read_csv(path))}\n{m.group('close')}"

    return MARKERS.sub(replace, text), names, problems


def update_file(path: str, results: str = DEFAULT_RESULTS, *, check: bool = False) -> int:
    """Rewrite the marked tables of ``path`` (``check``: only compare). Returns an exit code."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new, names, problems = update_text(text, results)
    for line in problems:
        print(line, file=sys.stderr)
    if check:
        stale = new != text
        print(f"{path}: {len(names)} tables, " + ("OUT OF DATE" if stale else "up to date"))
        return 1 if stale or problems else 0
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    print(f"{path}: {len(names)} tables from {results} ({', '.join(names) or 'no markers'})"
          f"{', rewritten' if new != text else ', unchanged'}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stylize_fast.bench.tables",
        description="Rewrite the tables between <!-- bench-table:NAME --> and "
                    "<!-- /bench-table:NAME --> from RESULTS/NAME.csv, or print one.")
    parser.add_argument("--update", metavar="MARKDOWN", nargs="+",
                        help="markdown files whose marked tables to rewrite")
    parser.add_argument("--results", default=DEFAULT_RESULTS, metavar="DIR",
                        help=f"folder of NAME.csv (default: {DEFAULT_RESULTS})")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a table differs from its CSV")
    parser.add_argument("--print", dest="show", metavar="NAME",
                        help="print the table of RESULTS/NAME.csv")
    args = parser.parse_args(argv)
    if args.show:
        print(render(args.show, report.read_csv(os.path.join(args.results, f"{args.show}.csv"))))
        return 0
    if not args.update:
        parser.error("give --update MARKDOWN... or --print NAME")
    return max(update_file(p, args.results, check=args.check) for p in args.update)


if __name__ == "__main__":
    sys.exit(main())
