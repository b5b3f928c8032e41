"""stylize-fast bench: time the fused ops and generators against PyTorch's own, on this
machine; print a table, write CSV and PNG plots."""

from __future__ import annotations

import argparse

HELP = "benchmark the fused ops, generators and training step against PyTorch's own"

_OPS = ("instance_norm", "padded_conv2d", "generator", "train")  # = bench.suite.OPS


def _csv_list(choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(choices)}; got {text!r}")
        return items

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full", action="store_true",
                        help="every provider, mode, layout and dtype at the Johnson-net shapes "
                             "and both generators (long: tens of minutes on 2 CPU cores)")
    parser.add_argument("--quick-only", action="store_true",
                        help="the quick case list even with --full's providers (with --compile)")
    parser.add_argument("--output", default="bench_results", metavar="DIR",
                        help="folder for results.csv, profile.csv and <op>.png bar charts "
                             "(default: ./bench_results)")
    parser.add_argument("--device", default=None, metavar="D",
                        help="cpu or cuda[:i] (default: cuda if available, else cpu)")
    parser.add_argument("--ops", type=_csv_list(_OPS), default=None, metavar="LIST",
                        help=f"only these ops, comma-separated: {', '.join(_OPS)}")
    parser.add_argument("--dtype", type=_csv_list(("float32", "bfloat16", "float16")),
                        default=None, metavar="LIST",
                        help="only these dtypes, comma-separated (float32, bfloat16, float16)")
    parser.add_argument("--mode", type=_csv_list(("forward", "forward+backward", "inference")),
                        default=None, metavar="LIST",
                        help="only these modes: forward, forward+backward, inference")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed samples per provider (default: 15 quick, 25 full)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="cap on sampling time per case (fewer repeats, at least 3); "
                             "default: 10 quick, 60 full")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="include torch.compile providers (default: only with --full)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--compile-ops", type=_csv_list(_OPS), default=None, metavar="LIST",
                        help="only these ops get torch.compile providers (implies --compile); "
                             "compiling takes minutes per shape on a small CPU")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG")
    parser.add_argument("--allocator", choices=("both", "pinned", "default"), default="both",
                        help="glibc allocator settings to run every case under, each in its own "
                             "subprocess: pinned (freed memory kept), default (glibc's own, "
                             "page-faulting big blocks back in) or both (default)")
    parser.add_argument("--memory", action="store_true",
                        help="also record each call's peak memory (CPU; one profiled call more)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="start no new case after this long and write what ran "
                             "(default: 120 for the quick list, none for --full)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for the run (default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import bench

    for name in ("repeats", "warmup", "threads"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "warmup" else 1):
            raise ValueError(f"--{name} must be a positive integer, got {v}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is visible to torch")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"--device must be cpu or cuda[:i], got {device!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    full = args.full and not args.quick_only
    cases = bench.suite.full() if full else bench.suite.quick()
    cases = bench.suite.select(cases, ops=args.ops, dtypes=args.dtype, modes=args.mode)
    if not cases:
        raise ValueError("no benchmark case matches --ops/--dtype/--mode")
    compile = args.full if args.compile is None else args.compile
    if args.compile_ops:
        compile = list(args.compile_ops) if args.compile is not False else False
    allocators = ("pinned", "default") if args.allocator == "both" else (args.allocator,)
    if isinstance(compile, list):
        compiled = "on for " + ",".join(compile)
    else:
        compiled = "on" if compile else "off"
    print(f"stylize-fast bench: {len(cases)} cases ({'full' if full else 'quick'}), "
          f"device {device}, torch.compile providers {compiled}, "
          f"{torch.get_num_threads()} threads")
    bench.run_bench(
        cases, args.output, device=device, compile=compile, warmup=args.warmup,
        repeats=args.repeats or (25 if full else 15),
        budget_s=args.budget if args.budget is not None else (60.0 if full else 10.0),
        plot=not args.no_plot, allocators=allocators, memory=args.memory,
        time_limit_s=args.time_limit if args.time_limit is not None else
        (None if full else 120.0))
    return 0
