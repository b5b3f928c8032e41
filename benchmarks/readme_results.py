"""The README's results: one CSV (and bar chart) per area into docs/results/, for
``python -m stylize_fast.bench.tables --update README.md``.

    python benchmarks/readme_results.py [--output docs/results] [--threads 2] [--device cpu]
                                        [--areas instance_norm,padded_conv,generators] [--smoke]

Areas and what they hold (each case under both allocator settings, one process per setting):

* ``instance_norm``: the Johnson generator's norm inputs at a 512x512 image (1x32x512x512,
  1x64x256x256, 1x128x128x128) in float32 NCHW inference (with torch.compile of the eager pair),
  NHWC inference, NCHW and NHWC forward+backward, bfloat16 NCHW inference;
* ``padded_conv``: the generators' convolution layers (benchmarks/bench_padded_conv.py's) in
  NCHW and NHWC, inference and forward+backward, with peak memory;
* ``generators``: JohnsonNet and TextureNet at 512x512, float32 and bfloat16, with torch.compile
  + freezing, onnxruntime and OpenVINO where installed, PSNR and the profile split;
* ``training``: one training step (generator, VGG-16 loss of the PyTorch examples, backward,
  Adam) at batch 4, 256x256, JohnsonNet and TextureNet, float32 and bfloat16 autocast, against
  the examples' eager float32 step, with peak memory and the split of the step.

Sized for about 20-25 minutes on 2 CPU cores: every area has a time limit after which it starts no
new case (the most telling cases come first; what did not run is logged). ``--smoke`` runs tiny
shapes with 2 rounds, to check the machinery in a minute.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stylize_fast.bench import run_bench, write_outputs  # noqa: E402
from stylize_fast.bench.suite import Case, conv_params, johnson_norm_shapes  # noqa: E402

AREAS = ("instance_norm", "padded_conv", "generators", "training")
# Seconds after which an area starts no new case (both allocator settings together).
TIME_LIMITS = {"instance_norm": 180.0, "padded_conv": 270.0, "generators": 360.0,
               "training": 600.0}
CONV_LAYERS = [((1, 3, 512, 512), 32, 9, 1), ((1, 128, 128, 128), 128, 3, 1),
               ((1, 64, 256, 256), 64, 3, 1), ((4, 32, 256, 256), 64, 3, 2),
               ((1, 32, 512, 512), 3, 9, 1)]


def parts(area: str, smoke: bool) -> list[tuple[list[Case], dict]]:
    """(cases, run_bench options) of each run making up ``area``."""
    if area == "instance_norm":
        shapes = [(1, 8, 16, 16)] if smoke else johnson_norm_shapes(1, 512)
        norm = lambda dtype, layout, mode: [Case("instance_norm", s, dtype, layout, mode)
                                            for s in shapes]
        rest = (norm("float32", "channels_last", "inference")
                + norm("float32", "contiguous", "forward+backward")
                + norm("float32", "channels_last", "forward+backward")
                + norm("bfloat16", "contiguous", "inference"))
        return [(norm("float32", "contiguous", "inference"), {"compile": not smoke}),
                (rest, {})]
    if area == "padded_conv":
        layers = [((1, 4, 16, 16), 4, 3, 1)] if smoke else CONV_LAYERS
        return [([Case("padded_conv2d", shape, "float32", layout, mode, conv_params(o, k, st))
                  for shape, o, k, st in layers for mode in ("inference", "forward+backward")
                  for layout in ("contiguous", "channels_last")],
                 {"memory": True, "budget_s": 6.0})]
    if area == "generators":
        size = 32 if smoke else 512
        return [([Case("generator", (1, 3, size, size), dtype, "contiguous", "inference",
                       (("arch", arch),))
                  for arch in ("johnson", "texture") for dtype in ("float32", "bfloat16")],
                 {"compile": not smoke, "budget_s": 25.0})]
    if area == "training":
        size = 32 if smoke else 256
        return [([Case("train", (1 if smoke else 4, 3, size, size), dtype, "contiguous",
                       "forward+backward", (("arch", arch),))
                  for arch in ("johnson", "texture") for dtype in ("float32", "bfloat16")],
                 {"memory": True, "budget_s": 40.0})]
    raise ValueError(f"unknown area {area!r}; expected one of {AREAS}")


def areas_arg(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in AREAS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"--areas: a comma-separated list of {', '.join(AREAS)}; "
                                         f"got {text!r}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=os.path.join("docs", "results"), metavar="DIR",
                        help="folder for AREA.csv and AREA.png (default docs/results)")
    parser.add_argument("--areas", type=areas_arg, default=list(AREAS), metavar="LIST",
                        help=f"comma-separated subset of {', '.join(AREAS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    parser.add_argument("--repeats", type=int, default=11, help="interleaved rounds (default 11)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes, 2 rounds: checks the machinery, not the speed")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    command = "python benchmarks/readme_results.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    for area in args.areas:
        rows: list[dict] = []
        profile_rows: list[dict] = []
        runs = parts(area, args.smoke)
        for cases, options in runs:
            limit = TIME_LIMITS[area] * len(cases) / sum(len(c) for c, _ in runs)
            print(f"== {area}: {len(cases)} cases x 2 allocator settings"
                  + ("" if args.smoke else f" (start no new case after {limit:.0f} s)"), flush=True)
            result = run_bench(cases, None, device=args.device, plot=False,
                               repeats=2 if args.smoke else args.repeats,
                               time_limit_s=None if args.smoke else limit,
                               command=command.strip(), **options)
            rows += result.rows
            profile_rows += result.profile_rows
        files = write_outputs(rows, profile_rows, args.output, name=area)
        print(f"== {area}: " + ", ".join(files.values()), flush=True)
    print(f"now: python -m stylize_fast.bench.tables --update README.md --results {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
