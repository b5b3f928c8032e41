"""Instance norm + ReLU: the fused op against the eager PyTorch pair and a same-size copy.

    python benchmarks/bench_instance_norm.py [--csv out.csv] [--quick] [--threads 2]
                                             [--shapes 1x3x256x256,4x8x256x256] [--repeats 11]
                                             [--compile] [--allocator both|pinned|default]

Each shape (default: the Johnson generator's norm inputs) in float32 NCHW, float32 channels_last
and bfloat16 NCHW, inference (no_grad) and forward+backward. Providers are those of
``stylize_fast.bench.instance_norm``: ``sf-<backend>`` (FusedInstanceNorm2d forced to each
backend), ``InstanceNorm2d+ReLU`` (eager, the baseline), ``group_norm+ReLU``, ``BatchNorm2d``
train / eval, ``torch.compile`` of the eager pair (``--compile``) and ``copy``. The timing method
(one call of each provider per round, interleaved; under each allocator setting), the table and the
CSV layout are ``stylize-fast bench``'s: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stylize_fast.bench import frontend  # noqa: E402
from stylize_fast.bench.suite import Case  # noqa: E402

SHAPES = [(4, 32, 256, 256), (4, 64, 128, 128), (4, 128, 64, 64), (1, 32, 1024, 1024),
          (1, 128, 256, 256)]
CONFIGS = [("float32", "contiguous"), ("float32", "channels_last"), ("bfloat16", "contiguous")]
MODES = ("inference", "forward+backward")


def cases(shapes: list[tuple[int, int, int, int]]) -> list[Case]:
    return [Case("instance_norm", shape, dtype, layout, mode)
            for shape in shapes for dtype, layout in CONFIGS for mode in MODES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    frontend.add_common_arguments(parser, repeats=11)
    parser.add_argument("--quick", action="store_true", help="two shapes, 3 rounds (smoke run)")
    parser.add_argument("--shapes", type=frontend.shapes_arg, default=None, metavar="NxCxHxW,...",
                        help="comma-separated shapes instead of the Johnson generator's")
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile of the eager pair (compiles per case: slow)")
    args = parser.parse_args(argv)
    if args.quick and args.repeats is None:
        args.repeats = 3
    shapes = args.shapes or (SHAPES[1:3] if args.quick else SHAPES)
    frontend.run(args, cases(shapes), compile=args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
