"""Conditional JohnsonNet: what a batch of different styles costs against a batch of one style.

    python benchmarks/bench_conditional_styles.py [--size 512] [--batch 8] [--styles 8]
                                                  [--repeats 7] [--threads 2]
                                                  [--allocator pinned|default]
                                                  [--csv docs/results/conditional_styles.csv]
                                                  [--plot FILE.png | --no-plot]

One fused conditional JohnsonNet (``norm="fused"``, ``styles=S``, eval, no_grad, CPU, float32)
on one batch of B random 0-255 images, four providers timed interleaved (one call of each per
round, :mod:`stylize_fast.bench.timing`):

* ``1 style`` (the baseline): every sample at style 0 (index tensor of zeros);
* ``S styles``: sample i at style i mod S (index tensor 0..S-1): the case conditional instance
  norm exists for -- each norm layer is still one kernel call for the whole batch;
* ``S-style mix``: dense random mixing weights ``(B, S)`` (every sample blends every style);
* ``single-style model``: the same architecture with ``styles=1`` (``FusedInstanceNorm2d``,
  one ``(C,)`` affine), i.e. what a conditional model costs over a plain one.

Ratios are medians over the same rounds against ``1 style``; the goal is ``S styles`` <= 1.15.
Rows go to ``--csv`` (the one CSV layout of ``stylize_fast.bench.report``; the file is
rewritten) and a bar chart of the ratios with p20-p80 whiskers to ``--plot`` when matplotlib is
installed. The allocator is set in this process (``pinned`` by default, as in the README's
numbers); unlike the other scripts there is no ``both``, which needs a process per setting.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stylize_fast.commands.argtypes import positive_int  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CSV = os.path.join(ROOT, "docs", "results", "conditional_styles.csv")
GOAL = 1.15  # S different styles may cost at most this times one style
BASELINE = "1 style"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=positive_int, default=512,
                        help="image side, a multiple of 4 (default 512)")
    parser.add_argument("--batch", type=positive_int, default=8, help="batch size (default 8)")
    parser.add_argument("--styles", type=positive_int, default=8,
                        help="styles of the conditional model, >= 2 (default 8)")
    parser.add_argument("--repeats", type=positive_int, default=7,
                        help="interleaved rounds, one call of each provider per round (default 7)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="calls per provider after the first, before sampling (default 1)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    parser.add_argument("--allocator", choices=("pinned", "default"), default="pinned",
                        help="glibc allocator setting of this process (default pinned)")
    parser.add_argument("--csv", metavar="FILE", default=DEFAULT_CSV,
                        help="write the rows to FILE, rewritten (default "
                             "docs/results/conditional_styles.csv)")
    parser.add_argument("--plot", metavar="FILE",
                        help="bar chart PNG (default: the CSV's path with .png)")
    parser.add_argument("--no-plot", action="store_true", help="no PNG")
    args = parser.parse_args(argv)
    if args.size % 4:
        parser.error(f"--size must be a multiple of 4 (JohnsonNet.multiple), got {args.size}")
    if args.styles < 2:
        parser.error("--styles must be at least 2 (a conditional model)")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.plot is None:
        args.plot = os.path.splitext(args.csv)[0] + ".png"
    return args


def make_models(styles: int, seed: int = 0):
    """(conditional model, single-style model): random weights, norm rows perturbed per style;
    the single-style model shares the convolutions and has style 0's norm parameters."""
    import torch

    from stylize_fast.models import JohnsonNet

    torch.manual_seed(seed)
    cond = JohnsonNet("fused", styles=styles).eval()
    single = JohnsonNet("fused").eval()
    with torch.no_grad():
        for p in cond.parameters():
            if p.dim() == 2:  # (styles, C) norm rows: distinct per style
                p.add_(torch.randn_like(p) * 0.2)
        state = single.state_dict()
        for name, value in cond.state_dict().items():
            state[name].copy_(value[0] if value.dim() == 2 and state[name].dim() == 1 else value)
    for model in (cond, single):
        model.requires_grad_(False)
    return cond, single


def providers(args: argparse.Namespace):
    """name -> (zero-argument call, note) for the four providers, on one shared input."""
    import torch

    cond, single = make_models(args.styles)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen) * 255.0
    one_style = torch.zeros(args.batch, dtype=torch.long)
    many = torch.arange(args.batch) % args.styles
    mix = torch.rand(args.batch, args.styles, generator=gen) + 0.05

    def call(model, *style):
        def run():
            with torch.no_grad():
                return model(x, *style)
        return run

    n = args.styles
    return {
        BASELINE: (call(cond, one_style), "index tensor of zeros"),
        f"{n} styles": (call(cond, many), f"index tensor arange(B) % {n}"),
        f"{n}-style mix": (call(cond, mix), f"dense random mixing weights (B, {n})"),
        "single-style model": (call(single), "styles=1 (FusedInstanceNorm2d)"),
    }


def check_outputs(calls) -> None:
    """The providers compute what their names say: the single-style model equals the
    conditional one at style 0, exactly (one cheap call each, before timing)."""
    import torch

    a, b = calls[BASELINE][0](), calls["single-style model"][0]()
    if not torch.equal(a, b):
        raise SystemExit("single-style model and conditional model at style 0 differ: "
                         f"max |diff| {(a - b).abs().max().item():.3e}")


def rows_from(timings, notes, args: argparse.Namespace, info: dict, command: str) -> list[dict]:
    from stylize_fast.bench.runner import finish_rows
    from stylize_fast.bench.timing import Timing

    base = {"op": "generator", "shape": f"{args.batch}x3x{args.size}x{args.size}",
            "params": f"arch=johnson styles={args.styles}", "dtype": "float32",
            "layout": "contiguous", "mode": "inference", "command": command}
    rows = []
    for name, t in timings.items():
        row = {**base, "provider": name, "backend": info["backend"], "note": notes[name],
               "baseline": int(name == BASELINE), "is_copy": 0}
        if isinstance(t, Timing):
            row.update(status="ok", median_ms=t.median * 1e3, p20_ms=t.p20 * 1e3,
                       p80_ms=t.p80 * 1e3, repeats=t.repeats, first_call_s=t.first_call_s)
        else:
            row["status"] = f"error: {type(t).__name__}: {str(t).splitlines()[0][:160]}"
        rows.append(row)
    return finish_rows(rows, {k: v for k, v in info.items() if k != "backend"})


def plot(rows: list[dict], path: str, goal: float) -> str | None:
    """Horizontal bars: each provider's median time / the one-style median, p20-p80 whiskers,
    the baseline (1.0) and the goal marked."""
    try:
        import matplotlib
    except ImportError:
        from stylize_fast.bench.report import PLOT_HINT

        print(PLOT_HINT)
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok" and r.get("ratio_to_baseline") is not None]
    if not ok:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(ok) + 1.6))
    for i, r in enumerate(ok):
        ratio = r["ratio_to_baseline"]
        lo, hi = ratio * r["p20_ms"] / r["median_ms"], ratio * r["p80_ms"] / r["median_ms"]
        ax.barh(i, ratio, height=0.6, color=plt.cm.tab10(i % 10),
                xerr=[[max(ratio - lo, 0)], [max(hi - ratio, 0)]], capsize=3,
                error_kw={"elinewidth": 0.8, "ecolor": "0.25"})
        ax.text(hi, i, f"  {ratio:.3f}  ({r['median_ms']:.0f} ms)", va="center", fontsize=8)
    ax.axvline(1.0, color="black", linewidth=0.9, linestyle="--")
    ax.axvline(goal, color="tab:red", linewidth=0.9, linestyle=":", label=f"goal {goal:g}x")
    ax.set_yticks(range(len(ok)), [r["provider"] for r in ok], fontsize=9)
    ax.set_ylim(len(ok) - 0.5, -0.5)
    ax.set_xlim(0, max(max(r["ratio_to_baseline"] for r in ok) * 1.35, goal * 1.25))
    ax.set_xlabel("time / one style (lower is better; bars: median, whiskers: p20-p80)",
                  fontsize=8)
    first = ok[0]
    ax.set_title(f"conditional JohnsonNet {first['shape']} float32 inference, "
                 f"{first['params'].split()[-1]}\n{first['device']}, {first['threads']} threads, "
                 f"torch {first['torch_version']}, {first['allocator']} malloc", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from stylize_fast.bench import allocator

    allocator.apply(args.allocator)  # before any large allocation
    import torch

    import stylize_fast as sf
    from stylize_fast.bench import machine
    from stylize_fast.bench.report import format_table, write_csv
    from stylize_fast.bench.timing import measure

    torch.set_num_threads(args.threads)
    if not sf.backends.available()["cpu"]:
        raise SystemExit("the cpu backend (C++ extension) is not available: "
                         f"{sf.backends.unavailable_reason('cpu')}")
    info = {**machine.collect("cpu"), "backend": "cpu"}
    command = " ".join(shlex.quote(a) for a in ["benchmarks/bench_conditional_styles.py",
                                                *(sys.argv[1:] if argv is None else argv)])
    print(machine.describe(info))
    with sf.backends.use("cpu"):
        calls = providers(args)
        check_outputs(calls)
        print(f"timing {len(calls)} providers x {args.repeats} rounds on a "
              f"{args.batch}x3x{args.size}x{args.size} batch ...", flush=True)
        timings = measure({name: fn for name, (fn, _) in calls.items()}, warmup=args.warmup,
                          repeats=args.repeats)
    rows = rows_from(timings, {name: note for name, (_, note) in calls.items()}, args, info,
                     command)
    print(format_table(rows))
    ratio = next((r.get("ratio_to_baseline") for r in rows
                  if r["provider"] == f"{args.styles} styles" and r.get("status") == "ok"), None)
    if ratio is not None:
        print(f"{args.styles} different styles / 1 style = {ratio:.3f} (goal <= {GOAL}): "
              f"{'met' if ratio <= GOAL else 'NOT met'}")
    print(f"wrote {write_csv(args.csv, rows)}")
    if not args.no_plot:
        path = plot(rows, args.plot, GOAL)
        if path:
            print(f"wrote {path}")
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
