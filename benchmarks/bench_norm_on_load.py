"""Normalize-on-load, layer by layer: each of JohnsonNet's norm -> convolution edges run as the
per-layer fused schedule (``FusedInstanceNorm2d`` then ``padded_conv2d``) and as
``norm_conv2d`` (the norm applied by the convolution's loads), and the whole model both ways
against the eager PyTorch model.

    python benchmarks/bench_norm_on_load.py [--size 512] [--batch 1] [--repeats 9]
                                            [--threads 2] [--dtype float32|bfloat16]
                                            [--device cpu|cuda]
                                            [--csv docs/results/norm_on_load.csv]
                                            [--plot FILE.png | --no-plot]

Per edge, three providers timed interleaved (one call of each per round,
:mod:`stylize_fast.bench.timing`), ratios against ``per-layer``:

* ``per-layer``: the fused norm (statistics + normalised copy) then the padded convolution;
* ``norm-on-load``: ``norm_conv2d`` with the statistics given (in the model they come from the
  producing convolution's epilogue, free);
* ``norm-on-load + stats``: the same plus a read-only statistics pass (what an edge whose
  producer gathers no statistics pays).

Then the model rows: the fused JohnsonNet (normalize-on-load), the same with
``no_norm_on_load`` and the eager ``norm="instance"`` model, ratios against the eager one.
Rows go to ``--csv`` (the CSV layout of ``stylize_fast.bench.report``; rewritten) and a bar chart
to ``--plot`` when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stylize_fast.commands.argtypes import positive_int  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CSV = os.path.join(ROOT, "docs", "results", "norm_on_load.csv")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=positive_int, default=512, help="image side (512)")
    parser.add_argument("--batch", type=positive_int, default=1, help="batch (1)")
    parser.add_argument("--repeats", type=positive_int, default=9, help="interleaved rounds (9)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads (2)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--csv", metavar="FILE", default=DEFAULT_CSV,
                        help="write the rows to FILE, rewritten (default "
                             "docs/results/norm_on_load.csv)")
    parser.add_argument("--plot", metavar="FILE", help="bar chart PNG (default: CSV path .png)")
    parser.add_argument("--no-plot", action="store_true", help="no PNG")
    args = parser.parse_args(argv)
    if args.size % 4:
        parser.error(f"--size must be a multiple of 4, got {args.size}")
    if args.plot is None:
        args.plot = os.path.splitext(args.csv)[0] + ".png"
    return args


def edge_providers(model, x):
    """(edge name, {provider: call}) for every norm -> convolution edge of ``model``, on the
    raw tensors of one forward of ``x``."""
    import torch

    from stylize_fast.nn import norm_on_load as nol
    from stylize_fast.ops import norm_conv

    raw = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda m, a, o, name=name: raw.__setitem__(name, a[0]))
        for name in ("in1", "in2", "in4", "in5")]
    hooks += [model.res1.in1.register_forward_hook(lambda m, a, o: raw.__setitem__("res.in1",
                                                                                    a[0]))]
    with torch.no_grad():
        model(x)  # hooked: the per-layer schedule, whose norm inputs are the raw tensors
    for h in hooks:
        h.remove()
    edges = [("in1", model.in1, model.conv2.conv2d), ("in2", model.in2, model.conv3.conv2d),
             ("res.in1", model.res1.in1, model.res1.conv2.conv2d),
             ("in4", model.in4, model.deconv2.conv2d), ("in5", model.in5, model.deconv3.conv2d)]
    out = []
    for name, norm, conv in edges:
        h = raw[name]
        mean, rstd = norm_conv.instance_norm_stats(h, norm.eps)
        pending = nol.pending(norm, h, mean, rstd)

        def per_layer(h=h, norm=norm, conv=conv):
            with torch.no_grad():
                return conv(norm(h))

        def on_load(pending=pending, conv=conv):
            with torch.no_grad():
                return nol.conv(conv, pending)

        def with_stats(h=h, norm=norm, conv=conv):
            with torch.no_grad():
                m, r = norm_conv.instance_norm_stats(h, norm.eps)
                return nol.conv(conv, nol.pending(norm, h, m, r))

        label = f"{name} -> {type(conv).__name__} {tuple(h.shape)}"
        out.append((label, {"per-layer": per_layer, "norm-on-load": on_load,
                            "norm-on-load + stats": with_stats}))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from stylize_fast import config
    from stylize_fast.bench import machine
    from stylize_fast.bench.report import format_table, plot, write_csv
    from stylize_fast.bench.runner import finish_rows
    from stylize_fast.bench.timing import Timing, measure
    from stylize_fast.models import JohnsonNet

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    fused = JohnsonNet("fused").eval().to(args.device, dtype)
    eager = JohnsonNet("instance").eval()
    eager.load_state_dict(fused.state_dict())
    eager = eager.to(args.device, torch.float32)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(args.batch, 3, args.size, args.size, generator=gen) * 255).to(args.device)
    xd = x.to(dtype)
    command = " ".join(shlex.quote(a) for a in ["benchmarks/bench_norm_on_load.py",
                                                *(sys.argv[1:] if argv is None else argv)])
    info = machine.collect(args.device)
    print(machine.describe(info))
    rows = []

    def add(op, shape, timings, baseline):
        for name, t in timings.items():
            row = {"op": op, "shape": shape, "params": "arch=johnson", "dtype": args.dtype,
                   "layout": "channels_last" if args.device == "cpu" else "contiguous",
                   "mode": "inference", "provider": name,
                   "backend": "cpu" if args.device == "cpu" else "cuda",
                   "baseline": int(name == baseline), "is_copy": 0, "command": command}
            if isinstance(t, Timing):
                row.update(status="ok", median_ms=t.median * 1e3, p20_ms=t.p20 * 1e3,
                           p80_ms=t.p80 * 1e3, repeats=t.repeats, first_call_s=t.first_call_s)
            else:
                row["status"] = f"error: {type(t).__name__}: {str(t).splitlines()[0][:160]}"
            rows.append(row)

    for label, calls in edge_providers(fused, xd):
        timings = measure(calls, device=args.device, repeats=args.repeats)
        add("norm_on_load edge", label, timings, "per-layer")

    def per_layer_model():
        with torch.no_grad(), config.override(no_norm_on_load=True):
            return fused(xd)

    def nol_model():
        with torch.no_grad():
            return fused(xd)

    def eager_model():
        with torch.no_grad():
            return eager(x)

    timings = measure({"fused (normalize-on-load)": nol_model,
                       "fused per-layer norm": per_layer_model,
                       "eager float32": eager_model}, device=args.device, repeats=args.repeats)
    add("generator", f"{args.batch}x3x{args.size}x{args.size}", timings, "eager float32")
    rows = finish_rows(rows, info)
    print(format_table(rows))
    print(f"wrote {write_csv(args.csv, rows)}")
    if not args.no_plot:
        for op, suffix in (("norm_on_load edge", "_edges"), ("generator", "_model")):
            path = plot(rows, op, os.path.splitext(args.plot)[0] + suffix + ".png")
            if path:
                print(f"wrote {path}")
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
