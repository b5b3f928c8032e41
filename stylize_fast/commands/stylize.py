"""stylize-fast stylize: run a trained generator on images, folders and videos."""

from __future__ import annotations

import argparse
import sys

from .argtypes import non_negative_int, number_list, positive_float, positive_int, unit_interval

HELP = "stylise images, folders of images and videos with a trained model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M",
                        help="model file: a stylize_fast checkpoint or a PyTorch examples "
                             "fast_neural_style .pth/.model")
    parser.add_argument("--input", required=True, nargs="+", metavar="PATH",
                        help="image files, folders (their images and videos) or video files; "
                             "- reads raw rgb24 frames from standard input (with --size); a "
                             "printf pattern such as frames/%%05d.png (or a folder with "
                             "--sequence) is an image sequence")
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="output folder; with one input image (video), may be a file; "
                             "- writes raw rgb24 frames to standard output; an image sequence "
                             "goes to a video file, a pattern (out/%%05d.png) or a folder")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="compute dtype (default: float32; bfloat16 is fast on recent CPUs)")
    parser.add_argument("--batch-size", type=positive_int, default=4,
                        help="images of one size / video frames per forward (default: 4)")
    parser.add_argument("--tile", type=non_negative_int, default=None,
                        help="tile side for large images (0: never tile; default: automatic "
                             "above 4 megapixels, 1024-pixel tiles)")
    parser.add_argument("--tile-overlap", type=non_negative_int, default=64,
                        help="pixels shared by neighbouring tiles, cross-faded (default: 64)")
    parser.add_argument("--preserve-color", action="store_true",
                        help="keep the content's colours (luminance transfer)")
    parser.add_argument("--strength", type=unit_interval, default=1.0,
                        help="style strength, 0 (content) .. 1 (full style; default)")
    parser.add_argument("--channels-last", action="store_true",
                        help="run in the channels_last memory format")
    parser.add_argument("--norm", choices=("fused", "instance"), default=None,
                        help="build the model with fused kernels (default for instance-norm "
                             "models) or plain PyTorch layers")
    parser.add_argument("--format", dest="output_ext", default=None, metavar="EXT",
                        help="image format of outputs in a folder, e.g. png (default: as input)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--style-index", type=non_negative_int, default=None, metavar="K",
                        help="multi-style models: the style to apply (0-based; "
                             "`stylize-fast info --model M` lists them)")
    choice.add_argument("--style-weights", type=number_list, default=None, metavar="W1,W2,...",
                        help="multi-style models: blend the styles with these weights, one per "
                             "style (normalised to sum to 1); AdaIN models: one per --style "
                             "image")
    parser.add_argument("--style", nargs="+", default=None, metavar="IMAGE",
                        help="AdaIN models: the style image(s); several are blended by "
                             "--style-weights (default: equally)")
    parser.add_argument("--alpha", type=unit_interval, default=1.0,
                        help="AdaIN models: content/style trade-off in feature space, 0 .. 1 "
                             "(default: 1, full style)")
    parser.add_argument("--size", default=None, metavar="WxH",
                        help="frame size of raw rgb24 frames read from standard input "
                             "(--input -), e.g. 640x360")
    parser.add_argument("--fps", type=positive_float, default=None,
                        help="frame rate of a video written from raw frames or an image "
                             "sequence (default: 25; a video input keeps its own)")
    parser.add_argument("--input-format", default=None, metavar="FMT",
                        help="open the input with this FFmpeg input format, e.g. v4l2 for "
                             "--input /dev/video0 (a live source: runs until the source ends; Ctrl-C "
                             "stops it and discards a file output)")
    parser.add_argument("--sequence", action="store_true",
                        help="input folders are image sequences (frames of one clip, in "
                             "natural name order), not folders of separate images")
    done = parser.add_mutually_exclusive_group()
    done.add_argument("--skip-existing", action="store_true",
                      help="skip inputs whose output exists (outputs are written atomically, so "
                           "an existing one is complete); the default under torchrun, which "
                           "also shards the inputs across ranks")
    done.add_argument("--overwrite", action="store_true",
                      help="under torchrun: write every output again, even existing ones")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or summary")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="leave glibc malloc at its defaults (slower CPU inference)")


def run(args: argparse.Namespace) -> int:
    import os
    import warnings

    from ..inference import Stylizer, collect_jobs
    from ..inference.dispatch import stylize_files
    from ..inference.raw_io import STDIO, parse_size
    from ..inference.shard import current_shard, select_jobs, shard_device
    from ..inference.video import StreamOptions

    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"model file not found: {args.model}")
    if args.size is not None and STDIO not in args.input:
        raise ValueError("--size is the frame size of raw frames on standard input "
                         "(--input -)")
    if STDIO in args.input and args.size is None:
        raise ValueError("--input - (raw rgb24 frames on standard input) needs --size WxH")
    stream = StreamOptions(size=parse_size(args.size) if args.size else None, fps=args.fps,
                           input_format=args.input_format, sequence=args.sequence,
                           output_ext=args.output_ext)
    jobs = collect_jobs(args.input, args.output, output_ext=args.output_ext,
                        sequence=args.sequence, input_format=args.input_format)
    shard = current_shard()
    if shard.distributed and (STDIO in args.input or args.output == STDIO):
        raise ValueError("torchrun shards files; standard input / output (-) is one stream")
    # Under torchrun an existing output is a finished one (outputs are written atomically).
    skip = (shard.distributed or args.skip_existing) and not args.overwrite
    selection = select_jobs(jobs, shard, skip_existing=skip)
    if shard.distributed or selection.already_done:
        where = f" [{shard.label}]" if shard.distributed else ""
        print(f"stylize-fast stylize{where}: {len(selection.jobs)} inputs to do"
              + (f" ({selection.other_ranks} for other ranks)" if shard.distributed else "")
              + f", {len(selection.already_done)} already done", file=sys.stderr)
    jobs, total = selection.jobs, len(jobs)
    if not jobs:
        return 0
    stylizer = Stylizer(args.model, device=shard_device(args.device, shard), dtype=args.dtype,
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
        stats = stylize_files(stylizer, jobs, stream)
    for src, reason in stats.failed:
        print(f"stylize-fast stylize: warning: skipped {src}: {reason}", file=sys.stderr)
    if stats.failed:
        print(f"stylize-fast stylize: {len(stats.failed)} of {len(jobs)} inputs skipped"
              + (f" ({total} in all ranks)" if shard.distributed else ""), file=sys.stderr)
    return 0 if stats.images + stats.frames > 0 or not jobs else 1
