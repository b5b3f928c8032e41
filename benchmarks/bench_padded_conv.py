"""Reflection-padded convolution: ours (padding inside the kernel) against F.pad + F.conv2d.

    python benchmarks/bench_padded_conv.py [--threads 2] [--repeats 7] [--quick] [--csv out.csv]
                                           [--no-memory] [--compile] [--allocator ...]
                                           [--upsampling]

The generators' convolution layers (9x9 3->32, 3x3 128->128, 3x3 64->64, 3x3 stride 2 32->64,
the nearest x2 upsampling + 3x3 layers 128->64 and 64->32, 9x9 32->3) in float32 NCHW and
channels_last, inference (no_grad) and forward+backward (forward,
then the gradients of input, weight and bias for a fixed random upstream gradient). Providers are
those of ``stylize_fast.bench.padded_conv``: ``sf-<backend>`` (PaddedConv2d forced to each
backend), ``F.pad+conv2d`` (the baseline), ``Conv2d(padding_mode)``, ``torch.compile`` of the pair
(``--compile``) and ``copy``. The ``note`` column names what our CPU kernel runs for the layer
(winograd, direct or library = oneDNN with zero padding + border fix-up; for forward+backward
also the input and weight gradients'), ``peak_mb`` the allocator high-water mark during one call
(unless ``--no-memory``). Timing method, table and CSV layout: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stylize_fast.bench import frontend  # noqa: E402
from stylize_fast.bench.suite import Case, conv_params  # noqa: E402

# (input shape, out_channels, kernel, stride[, upsample]): the generators' convolution layers
# (JohnsonNet at 512x512; its upsampling layers at batch 4, 256x256 training size).
LAYERS = [
    ((1, 3, 512, 512), 32, 9, 1),
    ((1, 128, 128, 128), 128, 3, 1),
    ((1, 64, 256, 256), 64, 3, 1),
    ((4, 32, 256, 256), 64, 3, 2),
    ((4, 128, 64, 64), 64, 3, 1, 2),
    ((4, 64, 128, 128), 32, 3, 1, 2),
    ((1, 32, 512, 512), 3, 9, 1),
]
QUICK_LAYERS = [
    ((1, 3, 256, 256), 32, 9, 1),
    ((1, 64, 64, 64), 64, 3, 1),
    ((2, 32, 128, 128), 64, 3, 2),
    ((1, 64, 32, 32), 32, 3, 1, 2),
]
LAYOUTS = ("contiguous", "channels_last")
MODES = ("inference", "forward+backward")


def cases(layers) -> list[Case]:
    return [Case("padded_conv2d", shape, "float32", layout, mode,
                 conv_params(out, k, stride, upsample=up))
            for shape, out, k, stride, *rest in layers for up in (rest or [1])
            for layout in LAYOUTS for mode in MODES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    frontend.add_common_arguments(parser, repeats=7)
    parser.add_argument("--quick", action="store_true", help="small layers, 3 rounds (smoke)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--upsampling", action="store_true",
                        help="only the nearest-upsampling layers (PaddedConv2d(upsample=2))")
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile of F.pad+conv2d (compiles per case: slow)")
    args = parser.parse_args(argv)
    if args.quick and args.repeats is None:
        args.repeats = 3
    layers = QUICK_LAYERS if args.quick else LAYERS
    if args.upsampling:
        layers = [layer for layer in layers if len(layer) > 4]
    frontend.run(args, cases(layers), compile=args.compile, memory=not args.no_memory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
