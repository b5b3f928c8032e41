"""Generator inference: the fused JohnsonNet / TextureNet against the eager plain-PyTorch model
(norm="instance") with the same weights, in float32 and bfloat16.

    python benchmarks/bench_generators.py [--arch johnson|texture] [--size 512] [--batch 1]
                                          [--repeats 7] [--threads 2] [--compile]
                                          [--dtype float32,bfloat16] [--allocator ...]

Providers are those of ``stylize_fast.bench.generators``: ``fused``, ``instance`` (the eager
model, the baseline; for bfloat16 cases the baseline is ``instance float32``), torch.compile with
freezing (``--compile``), onnxruntime and OpenVINO (when installed); PSNR against the eager
float32 model on the same input, and the profile split. Timing method, table and CSV layout:
docs/benchmarks.md. Both generators at several sizes: ``stylize-fast bench --full``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stylize_fast.bench import frontend  # noqa: E402
from stylize_fast.bench.suite import Case  # noqa: E402


def dtypes_arg(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or any(t not in ("float32", "bfloat16", "float16") for t in items):
        raise argparse.ArgumentTypeError(f"--dtype: a comma-separated list of float32, "
                                         f"bfloat16, float16; got {text!r}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    frontend.add_common_arguments(parser, repeats=7)
    parser.add_argument("--arch", choices=("johnson", "texture"), default="johnson")
    parser.add_argument("--size", type=int, default=512, help="image side (default 512)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", type=dtypes_arg, default=["float32", "bfloat16"],
                        metavar="LIST", help="comma-separated (default float32,bfloat16)")
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile + freezing of the eager model (slow to compile)")
    args = parser.parse_args(argv)
    if args.size < 8 or args.batch < 1:
        parser.error("--size must be at least 8 and --batch positive")
    cases = [Case("generator", (args.batch, 3, args.size, args.size), dtype, "contiguous",
                  "inference", (("arch", args.arch),)) for dtype in args.dtype]
    frontend.run(args, cases, compile=args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
