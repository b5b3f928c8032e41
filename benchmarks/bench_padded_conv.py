"""Padded convolution (CPU): ours vs F.pad(reflect) + F.conv2d vs nn.Conv2d(padding_mode="reflect").

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1 \
        python benchmarks/bench_padded_conv.py [--csv out.csv] [--quick] [--threads 2]

For each convolution layer of the generators (Johnson's first 9x9 3->32, a 128-channel residual
3x3, a 64-channel 3x3 after upsampling, a stride-2 3x3 32->64 at batch 4, the last 9x9 32->3) in
float32 NCHW and channels_last it times, interleaved round by round so that all providers share
the same noise:

    ours       sf.functional.padded_conv2d(x, w, b, stride, k // 2, "reflect"), cpu backend
    pad_conv   F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), w, b, stride)   (the yardstick)
    nn_conv    nn.Conv2d(..., padding=p, padding_mode="reflect")

in two modes: ``forward`` (under no_grad) and ``backward`` (the backward pass alone, for input,
weight and bias gradients, with a fixed random upstream gradient; the forward runs untimed).
It prints medians and ratios to pad_conv and appends CSV rows (op, provider, shape, dtype, layout,
mode, median_ms, p20_ms, p80_ms, ratio, peak_mb, out_channels, kernel, stride, algorithm, torch,
threads, timestamp). ``algorithm`` is what our CPU kernel ran for the layer: forward rows name
the forward algorithm (winograd, direct, or library = oneDNN with zero padding + border fix-up),
backward rows ``input:<algorithm>/weight:<algorithm>`` for the two gradients (the weight
gradient: direct = padded_conv_cpu_wgrad.cpp, library = oneDNN + border corrections).

Peak memory (``peak_mb``) is measured with the profiler's allocation tracking: every allocation
and free made through PyTorch's CPU allocator during one call (profile_memory=True; events taken
from the profiler's event tree) is replayed in time order, and the high-water mark of the running
total is reported -- the extra memory the call needed beyond the tensors that existed before it
(inputs, weights). For ``forward`` it is one no-grad forward; for ``backward`` one forward plus
backward (what a training step holds: saved tensors, gradients, temporaries).

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
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import stylize_fast as sf  # noqa: E402
from stylize_fast.ops import padded_conv as padded_conv_ops  # noqa: E402

# (input shape, out_channels, kernel, stride): the generators' convolution layers.
LAYERS = [
    ((1, 3, 512, 512), 32, 9, 1),
    ((1, 128, 128, 128), 128, 3, 1),
    ((1, 64, 256, 256), 64, 3, 1),
    ((4, 32, 256, 256), 64, 3, 2),
    ((1, 32, 512, 512), 3, 9, 1),
]
QUICK_LAYERS = [
    ((1, 3, 256, 256), 32, 9, 1),
    ((1, 64, 64, 64), 64, 3, 1),
    ((2, 32, 128, 128), 64, 3, 2),
]
LAYOUTS = ["nchw", "channels_last"]
PROVIDERS = ["ours", "pad_conv", "nn_conv"]
MODES = ["forward", "backward"]
FIELDS = ["op", "provider", "shape", "dtype", "layout", "mode", "median_ms", "p20_ms", "p80_ms",
          "ratio", "peak_mb", "out_channels", "kernel", "stride", "algorithm", "torch", "threads",
          "timestamp"]


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    pos = q * (len(values) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def peak_bytes(fn) -> int:
    """High-water mark of the bytes allocated through PyTorch's CPU allocator during fn()."""
    from torch._C._profiler import _EventType

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        fn()
    deltas, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            deltas.append((event.start_time_ns, event.extra_fields.alloc_size))
        stack.extend(event.children)
    current = peak = 0
    for _, size in sorted(deltas):
        current += size
        peak = max(peak, current)
    return peak


def make_layer(shape, out_channels, k, stride, layout):
    """Input, parameters and (provider, mode) -> (setup, timed) callables for one layer."""
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = (torch.randn(shape, generator=gen) * 2 + 0.5).contiguous(memory_format=fmt)
    conv = nn.Conv2d(shape[1], out_channels, k, stride, padding=k // 2, padding_mode="reflect")
    w, b, p = conv.weight, conv.bias, k // 2
    xg = x.detach().clone().requires_grad_(True)
    forwards = {
        "ours": lambda x: sf.functional.padded_conv2d(x, w, b, stride, p, "reflect"),
        "pad_conv": lambda x: F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), w, b, stride),
        "nn_conv": conv,
    }
    out_shape = forwards["pad_conv"](x.detach()[:1]).shape[1:]
    grad = torch.randn((shape[0], *out_shape), generator=gen).contiguous(memory_format=fmt)

    def clear():
        xg.grad = None
        conv.zero_grad(set_to_none=True)

    def algorithm_of(**part):
        return padded_conv_ops.cpu_algorithm(x, w, (stride, stride), (p, p), 1, **part)

    algorithm = {"forward": algorithm_of(),
                 "backward": f"input:{algorithm_of(input_grad=True)}/"
                             f"weight:{algorithm_of(weight_grad=True)}"}
    fns = {}
    for name, f in forwards.items():
        def fwd(f=f):
            with torch.no_grad():
                f(x)

        def bwd_setup(f=f):
            clear()
            return f(xg)

        def bwd(y):
            y.backward(grad)

        def fwd_bwd(f=f):
            clear()
            f(xg).backward(grad)

        fns[(name, "forward")] = (None, fwd, fwd)
        fns[(name, "backward")] = (bwd_setup, bwd, fwd_bwd)
    return fns, algorithm


def measure(fns: dict, repeats: int, warmup: int) -> dict:
    """Interleaved timing: every round runs every (provider, mode) once. key -> list of ms."""
    for setup, timed, _ in fns.values():
        for _ in range(warmup):
            timed(setup() if setup else None) if setup else timed()
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, (setup, timed, _) in fns.items():
            arg = setup() if setup else None
            t0 = time.perf_counter()
            timed(arg) if setup else timed()
            times[key].append((time.perf_counter() - t0) * 1e3)
            del arg
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", help="append result rows to this CSV file")
    parser.add_argument("--quick", action="store_true", help="small layers, few repeats (smoke)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per layer")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    args = parser.parse_args(argv)

    if not sf.backends.available()["cpu"]:
        print("the cpu backend is not available: " + sf.backends.unavailable_reason("cpu"))
        return 1
    torch.set_num_threads(args.threads)
    layers = QUICK_LAYERS if args.quick else LAYERS
    repeats = args.repeats or (3 if args.quick else 7)
    warmup = 1
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"torch {torch.__version__}, {args.threads} threads, float32; {ALLOCATOR_NOTE}; "
          f"median of {repeats} interleaved rounds, ms [ratio to pad_conv]; peak MB = "
          "allocator high-water mark during the call (forward: no-grad forward; backward: "
          "forward + backward)")
    header = (f"{'layer (algorithm)':>38} {'layout':>13} {'mode':>8} | " +
              " ".join(f"{p:>16}" for p in PROVIDERS) + " | peak MB " +
              "/".join(PROVIDERS))
    print(header)
    print("-" * len(header))
    rows = []
    with sf.backends.use("cpu"):
        for shape, out_channels, k, stride in layers:
            for layout in LAYOUTS:
                fns, algorithm = make_layer(shape, out_channels, k, stride, layout)
                peaks = {}
                if not args.no_memory:
                    for key, (_, _, whole) in fns.items():
                        whole()  # warm caches (oneDNN primitives) outside the measurement
                        peaks[key] = peak_bytes(whole) / 2**20
                times = measure(fns, repeats, warmup)
                for mode in MODES:
                    base = statistics.median(times[("pad_conv", mode)])
                    cells, mems = [], []
                    for provider in PROVIDERS:
                        ts = times[(provider, mode)]
                        med = statistics.median(ts)
                        peak = peaks.get((provider, mode), float("nan"))
                        cells.append(f"{med:8.2f} [{med / base:5.2f}]")
                        mems.append(f"{peak:.1f}")
                        rows.append({
                            "op": "padded_conv2d", "provider": provider,
                            "shape": "x".join(map(str, shape)), "dtype": "float32",
                            "layout": layout, "mode": mode, "median_ms": f"{med:.4f}",
                            "p20_ms": f"{_quantile(ts, 0.2):.4f}",
                            "p80_ms": f"{_quantile(ts, 0.8):.4f}",
                            "ratio": f"{med / base:.3f}", "peak_mb": f"{peak:.2f}",
                            "out_channels": out_channels, "kernel": k, "stride": stride,
                            "algorithm": algorithm[mode], "torch": torch.__version__,
                            "threads": args.threads,
                            "timestamp": stamp,
                        })
                    short = "+".join(a.split(":")[-1][:4] for a in algorithm[mode].split("/"))
                    name = f"{'x'.join(map(str, shape))} {k}x{k}/{stride}->{out_channels} {short}"
                    print(f"{name:>38} {layout:>13} {mode:>8} | " + " ".join(cells) + " | " +
                          "/".join(mems), flush=True)
                del fns

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
