"""First benchmark of the fused instance norm + ReLU (CPU): times against a same-size copy.

    python benchmarks/bench_instance_norm.py [--csv out.csv] [--quick] [--threads 2]
                                             [--shapes 1x3x256x256,4x8x256x256]

For each shape of the Johnson generator and each of float32 NCHW, float32 channels_last and
bfloat16 NCHW it times, interleaved round by round so that all providers share the same noise:

    clone          x.clone()                                     (the yardstick: a pure copy)
    fused          sf.functional.instance_norm(x, w, b, activation="relu"), cpu backend
    eager          nn.InstanceNorm2d(C, affine=True) then torch.relu
    group_norm     F.group_norm(x, C, w, b) then torch.relu
and forward+backward (a fixed random upstream gradient) of fused and eager. It prints medians and
ratios to clone, and appends CSV rows (op, provider, shape, dtype, layout, mode, median_ms,
p20_ms, p80_ms, ratio_to_clone, torch, threads, timestamp).

glibc's allocator hands big blocks back to the OS and page-faults them in again on the next
allocation, which would bill every output allocation with page faults; the script turns that off
with mallopt (the same as running under MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import sys
import time

from stylize_fast.bench import allocator  # noqa: E402

ALLOCATOR_NOTE = allocator.pin()  # before the benchmark allocates anything

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import stylize_fast as sf  # noqa: E402

SHAPES = [(4, 32, 256, 256), (4, 64, 128, 128), (4, 128, 64, 64), (1, 32, 1024, 1024),
          (1, 128, 256, 256)]
CONFIGS = [  # (dtype, layout)
    (torch.float32, "nchw"),
    (torch.float32, "channels_last"),
    (torch.bfloat16, "nchw"),
]
FIELDS = ["op", "provider", "shape", "dtype", "layout", "mode", "median_ms", "p20_ms", "p80_ms",
          "ratio_to_clone", "torch", "threads", "timestamp"]


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    pos = q * (len(values) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _parse_shapes(text: str) -> list[tuple[int, int, int, int]]:
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(
                f"--shapes: expected N x C x H x W with positive integers (e.g. 4x8x256x256), "
                f"got {item!r}")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def providers(x: torch.Tensor) -> dict[tuple[str, str], callable]:
    """(provider, mode) -> a no-argument callable running it once on x."""
    n, c = x.shape[:2]
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(c, generator=gen) + 0.5
    b = torch.randn(c, generator=gen)
    grad = torch.randn(x.shape, generator=gen).to(x.dtype).contiguous(
        memory_format=torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous() else torch.contiguous_format)
    eager = torch.nn.InstanceNorm2d(c, affine=True).to(x.dtype)
    with torch.no_grad():
        eager.weight.copy_(w)
        eager.bias.copy_(b)
    w_half, b_half = w.to(x.dtype), b.to(x.dtype)  # F.group_norm wants the input's dtype
    xg = x.detach().clone().requires_grad_(True)
    wg, bg = w.clone().requires_grad_(True), b.clone().requires_grad_(True)

    def fused_fwd():
        with torch.no_grad():
            sf.functional.instance_norm(x, w, b, activation="relu")

    def fused_fwd_bwd():
        y = sf.functional.instance_norm(xg, wg, bg, activation="relu")
        y.backward(grad)
        xg.grad = wg.grad = bg.grad = None

    def eager_fwd():
        with torch.no_grad():
            torch.relu(eager(x))

    def eager_fwd_bwd():
        y = torch.relu(eager(xg))
        y.backward(grad)
        xg.grad = None
        eager.zero_grad(set_to_none=True)

    def group_norm_fwd():
        with torch.no_grad():
            torch.relu(F.group_norm(x, c, w_half, b_half))

    def clone():
        x.clone()

    return {
        ("clone", "forward"): clone,
        ("fused", "forward"): fused_fwd,
        ("eager", "forward"): eager_fwd,
        ("group_norm", "forward"): group_norm_fwd,
        ("fused", "forward+backward"): fused_fwd_bwd,
        ("eager", "forward+backward"): eager_fwd_bwd,
    }


def measure(fns: dict, repeats: int, warmup: int) -> dict:
    """Interleaved timing: every round runs every provider once. Returns key -> list of ms."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t0) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", help="append result rows to this CSV file")
    parser.add_argument("--quick", action="store_true", help="two shapes, few repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per configuration")
    parser.add_argument("--shapes", type=_parse_shapes, default=None, metavar="NxCxHxW,...",
                        help="comma-separated shapes instead of the Johnson generator's")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="statistic shown in the table (CSV has median, p20, p80); on a busy "
                             "machine min estimates the undisturbed time better")
    args = parser.parse_args(argv)

    if not sf.backends.available()["cpu"]:
        print("the cpu backend is not available: " + sf.backends.unavailable_reason("cpu"))
        return 1
    torch.set_num_threads(args.threads)
    shapes = args.shapes or (SHAPES[1:3] if args.quick else SHAPES)
    repeats = args.repeats or (3 if args.quick else 11)
    warmup = 1 if args.quick else 2
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    isa = torch.ops.stylize_fast.instance_norm_cpu_isa() if hasattr(
        torch.ops.stylize_fast, "instance_norm_cpu_isa") else "?"
    print(f"torch {torch.__version__}, {args.threads} threads, cpu kernels: {isa}; "
          f"{ALLOCATOR_NOTE}; {args.stat} of {repeats} interleaved rounds, times in ms "
          "(ratio to clone in brackets)")

    rows = []
    header = f"{'shape':>18} {'dtype':>8} {'layout':>13} | {'clone':>7} | " \
             f"{'fused fwd':>15} {'eager fwd':>15} {'group_norm fwd':>15} | " \
             f"{'fused fwd+bwd':>15} {'eager fwd+bwd':>15}"
    print(header)
    print("-" * len(header))
    with sf.backends.use("cpu"):
        for shape in shapes:
            for dtype, layout in CONFIGS:
                x = torch.randn(shape).mul_(2).add_(0.5).to(dtype)
                if layout == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last)
                fns = providers(x)
                times = measure(fns, repeats, warmup)
                stat = min if args.stat == "min" else statistics.median
                clone_ms = statistics.median(times[("clone", "forward")])
                clone_shown = stat(times[("clone", "forward")])
                cells = {}
                for (provider, mode), ts in times.items():
                    med = statistics.median(ts)
                    cells[(provider, mode)] = (stat(ts), stat(ts) / clone_shown)
                    rows.append({
                        "op": "instance_norm_relu", "provider": provider,
                        "shape": "x".join(map(str, shape)),
                        "dtype": str(dtype).replace("torch.", ""),
                        "layout": layout, "mode": mode, "median_ms": f"{med:.4f}",
                        "p20_ms": f"{_quantile(ts, 0.2):.4f}",
                        "p80_ms": f"{_quantile(ts, 0.8):.4f}",
                        "ratio_to_clone": f"{med / clone_ms:.3f}", "torch": torch.__version__,
                        "threads": args.threads, "timestamp": stamp,
                    })

                def cell(key, cells=cells):
                    value, ratio = cells[key]
                    return f"{value:7.2f} [{ratio:5.2f}]"

                print(f"{'x'.join(map(str, shape)):>18} {str(dtype)[6:]:>8} {layout:>13} | "
                      f"{clone_shown:7.2f} | {cell(('fused', 'forward')):>15} "
                      f"{cell(('eager', 'forward')):>15} {cell(('group_norm', 'forward')):>15} | "
                      f"{cell(('fused', 'forward+backward')):>15} "
                      f"{cell(('eager', 'forward+backward')):>15}", flush=True)
                del fns, x

    if args.csv:
        new = not os.path.exists(args.csv) or os.path.getsize(args.csv) == 0
        with open(args.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {len(rows)} rows to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
