"""What the ``benchmarks/bench_*.py`` scripts share: their common flags, and running a case list
through :func:`stylize_fast.bench.run_bench` into the one CSV layout (:mod:`.report`)."""

from __future__ import annotations

import argparse
import csv
import os
import sys

from .suite import Case


def add_common_arguments(parser: argparse.ArgumentParser, *, repeats: int, threads: int = 2) -> None:
    parser.add_argument("--threads", type=int, default=threads,
                        help=f"torch threads (default {threads})")
    parser.set_defaults(default_repeats=repeats)
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"interleaved rounds, one call of each provider per round "
                             f"(default {repeats})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    parser.add_argument("--allocator", choices=("both", "pinned", "default"), default="both",
                        help="glibc allocator settings to run under, each in its own process: "
                             "pinned (freed memory kept), default (glibc's own) or both (default)")
    parser.add_argument("--csv", metavar="FILE",
                        help="append the rows to FILE (the layout of stylize-fast bench's "
                             "results.csv; a new file gets the header)")
    parser.add_argument("--output", metavar="DIR",
                        help="also write SCRIPT.csv and the PNG bar charts (SCRIPT.png) into DIR")


def shapes_arg(text: str) -> list[tuple[int, int, int, int]]:
    """``NxCxHxW,...`` for ``--shapes``."""
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(
                f"--shapes: expected N x C x H x W with positive integers (e.g. 4x8x256x256), "
                f"got {item!r}")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def check_csv(path: str) -> bool:
    """Whether ``path`` already holds rows of the one layout (False: new or empty); a file of
    another layout stops the script with one line, before anything is measured."""
    from .report import CSV_COLUMNS

    if not (os.path.exists(path) and os.path.getsize(path) > 0):
        return False
    with open(path, newline="") as f:
        header = tuple(next(csv.reader(f), ()))
    if header != CSV_COLUMNS:
        raise SystemExit(f"--csv {path}: the file has other columns (an older layout); "
                         "give a new file name")
    return True


def append_csv(path: str, rows: list[dict]) -> None:
    """Append ``rows`` to ``path`` in the one CSV layout (a new file gets the header)."""
    from .report import CSV_COLUMNS, _cell

    exists = check_csv(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if not exists:
            w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in CSV_COLUMNS])


def run(args: argparse.Namespace, cases: list[Case], **kw) -> list[dict]:
    """Run ``cases`` as the script's flags say; print the table; write --csv / --output."""
    import torch

    from . import run_bench, write_outputs

    repeats = args.repeats if args.repeats is not None else args.default_repeats
    if args.threads < 1 or repeats < 1:
        raise SystemExit("--threads and --repeats must be positive integers")
    if args.csv:
        check_csv(args.csv)
    torch.set_num_threads(args.threads)
    allocators = ("pinned", "default") if args.allocator == "both" else (args.allocator,)
    result = run_bench(cases, None, device=args.device, repeats=repeats, allocators=allocators,
                       **kw)
    if args.output:
        # Named after the script, so several scripts can share one folder.
        name = os.path.splitext(os.path.basename(sys.argv[0]))[0] or "results"
        for path in write_outputs(result.rows, result.profile_rows, args.output,
                                  name=name).values():
            print(f"wrote {path}")
    if args.csv:
        append_csv(args.csv, result.rows)
        print(f"wrote {len(result.rows)} rows to {args.csv}")
    return result.rows
