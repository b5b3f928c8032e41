"""stylize-fast stylize: run a trained generator on images, folders and videos."""

from __future__ import annotations

import argparse
import sys

HELP = "stylise images, folders of images and videos with a trained model"


def _strength(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _weights(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") \
            from None
    if not values:
        raise argparse.ArgumentTypeError("expected comma-separated numbers, got nothing")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M",
                        help="model file: a stylize_fast checkpoint or a PyTorch examples "
                             "fast_neural_style .pth/.model")
    parser.add_argument("--input", required=True, nargs="+", metavar="PATH",
                        help="image files, folders (their images and videos) or video files")
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="output folder; with one input image (video), may be a file")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="compute dtype (default: float32; bfloat16 is fast on recent CPUs)")
    parser.add_argument("--batch-size", type=_positive, default=4,
                        help="images of one size / video frames per forward (default: 4)")
    parser.add_argument("--tile", type=_non_negative, default=None,
                        help="tile side for large images (0: never tile; default: automatic "
                             "above 4 megapixels, 1024-pixel tiles)")
    parser.add_argument("--tile-overlap", type=_non_negative, default=64,
                        help="pixels shared by neighbouring tiles, cross-faded (default: 64)")
    parser.add_argument("--preserve-color", action="store_true",
                        help="keep the content's colours (luminance transfer)")
    parser.add_argument("--strength", type=_strength, default=1.0,
                        help="style strength, 0 (content) .. 1 (full style; default)")
    parser.add_argument("--channels-last", action="store_true",
                        help="run in the channels_last memory format")
    parser.add_argument("--norm", choices=("fused", "instance"), default=None,
                        help="build the model with fused kernels (default for instance-norm "
                             "models) or plain PyTorch layers")
    parser.add_argument("--format", dest="output_ext", default=None, metavar="EXT",
                        help="image format of outputs in a folder, e.g. png (default: as input)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--style-index", type=_non_negative, default=None, metavar="K",
                        help="multi-style models: the style to apply (0-based; "
                             "`stylize-fast info --model M` lists them)")
    choice.add_argument("--style-weights", type=_weights, default=None, metavar="W1,W2,...",
                        help="multi-style models: blend the styles with these weights, one per "
                             "style (normalised to sum to 1); AdaIN models: one per --style "
                             "image")
    parser.add_argument("--style", nargs="+", default=None, metavar="IMAGE",
                        help="AdaIN models: the style image(s); several are blended by "
                             "--style-weights (default: equally)")
    parser.add_argument("--alpha", type=_strength, default=1.0,
                        help="AdaIN models: content/style trade-off in feature space, 0 .. 1 "
                             "(default: 1, full style)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or summary")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="leave glibc malloc at its defaults (slower CPU inference)")


def run(args: argparse.Namespace) -> int:
    import os
    import warnings

    from ..inference import Stylizer, collect_jobs

    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"model file not found: {args.model}")
    jobs = collect_jobs(args.input, args.output, output_ext=args.output_ext)
    stylizer = Stylizer(args.model, device=args.device, dtype=args.dtype,
                        channels_last=args.channels_last, batch_size=args.batch_size,
                        tile=args.tile, tile_overlap=args.tile_overlap,
                        preserve_color=args.preserve_color, strength=args.strength,
                        progress=not args.no_progress, tune_allocator=not args.no_malloc_tuning,
                        norm=args.norm,
                        style=args.style_index if args.style_index is not None
                        else (args.style_weights if not args.style else None),
                        style_images=args.style,
                        style_weights=args.style_weights if args.style else None,
                        alpha=args.alpha)
    with warnings.catch_warnings():
        # Skipped files are reported once below, not as Python warnings.
        warnings.filterwarnings("ignore", message="skipped ", category=RuntimeWarning)
        stats = stylizer.stylize_files(jobs)
    for src, reason in stats.failed:
        print(f"stylize-fast stylize: warning: skipped {src}: {reason}", file=sys.stderr)
    if stats.failed:
        print(f"stylize-fast stylize: {len(stats.failed)} of {len(jobs)} inputs skipped",
              file=sys.stderr)
    return 0 if stats.images + stats.frames > 0 or not jobs else 1
