"""stylize-fast evaluate-video: the flicker (warping error) of a stylised video and of its input."""

from __future__ import annotations

import argparse

from .argtypes import non_negative_int, number_list, positive_int, unit_interval

HELP = "measure the flicker (warping error) of a model on a video, and of the video itself"


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 (the error compares frame pairs), "
                                         f"got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M",
                        help="model file: a stylize_fast checkpoint or a PyTorch examples "
                             "fast_neural_style .pth/.model")
    parser.add_argument("--input", required=True, metavar="VIDEO", help="the video to stylise")
    parser.add_argument("--csv", default=None, metavar="FILE",
                        help="write per-frame errors: frame, input_warping_error, "
                             "warping_error, valid_fraction")
    parser.add_argument("--plot", default=None, metavar="FILE",
                        help="write a PNG of both per-frame error curves")
    parser.add_argument("--flow", choices=("dis", "farneback"), default="dis",
                        help="optical flow on the input frames: OpenCV DIS (default) or "
                             "Farneback")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="compute dtype (default: float32)")
    parser.add_argument("--batch-size", type=positive_int, default=4,
                        help="video frames per forward (default: 4)")
    parser.add_argument("--max-frames", type=_at_least_two, default=None, metavar="N",
                        help="evaluate the first N frames only")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--style-index", type=non_negative_int, default=None, metavar="K",
                        help="multi-style models: the style to apply (0-based)")
    choice.add_argument("--style-weights", type=number_list, default=None, metavar="W1,W2,...",
                        help="multi-style models: blend the styles with these weights; AdaIN "
                             "models: one per --style image")
    parser.add_argument("--style", nargs="+", default=None, metavar="IMAGE",
                        help="AdaIN models: the style image(s)")
    parser.add_argument("--alpha", type=unit_interval, default=1.0,
                        help="AdaIN models: content/style trade-off, 0 .. 1 (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from ..evaluation import evaluate_video

    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"model file not found: {args.model}")
    report = evaluate_video(
        args.model, args.input, method=args.flow, max_frames=args.max_frames,
        progress=not args.no_progress, device=args.device, dtype=args.dtype,
        batch_size=args.batch_size,
        style=args.style_index if args.style_index is not None
        else (args.style_weights if not args.style else None),
        style_images=args.style,
        style_weights=args.style_weights if args.style else None,
        alpha=args.alpha)
    if args.csv:
        report.write_csv(args.csv)
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    print(f"{args.input}: {report.frames} frames, {args.flow} flow on the input, "
          f"{100 * report.valid_fraction:.1f}% of pixels compared (not occluded); warping error "
          f"= mean squared RGB difference to the previous frame warped, RGB in [0, 1]")
    print(f"warping_error={report.warping_error:.8g}")
    print(f"input_warping_error={report.input_warping_error:.8g}")
    return 0
