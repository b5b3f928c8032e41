"""stylize-fast train: train a generator on a folder of content images for one style image,
one multi-style generator for several (``--style a.jpg b.jpg ...``), a new style on top of a
trained model (``--add-style IMAGE --model M``), or an AdaIN decoder for arbitrary styles
(``--arch adain --style-data DIR``).

Also runs under ``torchrun --nproc_per_node=K`` (DistributedDataParallel, gloo on CPU, nccl on
GPU); only rank 0 writes checkpoints, samples and the final model.
"""

from __future__ import annotations

import argparse

from .argtypes import non_negative_float, non_negative_int, positive_int

HELP = "train a feed-forward style-transfer generator (resumable, AMP, DDP under torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--style", nargs="+", default=None, metavar="IMAGE",
                        help="style image; several train one multi-style model (conditional "
                             "instance norm, a style drawn per sample)")
    parser.add_argument("--add-style", default=None, metavar="IMAGE",
                        help="add this style to the trained model --model, training only its "
                             "new instance-norm rows (the other styles stay bit-identical)")
    parser.add_argument("--model", default=None, metavar="M",
                        help="with --add-style: the trained model file to extend")
    parser.add_argument("--style-data", default=None, metavar="DIR",
                        help="with --arch adain: folder of style images")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="folder of content images (searched recursively; unreadable files "
                             "are skipped and counted)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="folder for checkpoint.pth, samples/, train_log.jsonl and model.pth")
    parser.add_argument("--arch", choices=("johnson", "texture", "adain"), default="johnson",
                        help="johnson / texture: a feed-forward generator for the --style "
                             "image(s); adain: a decoder for any style (--style-data)")
    parser.add_argument("--norm", choices=("batch", "instance", "fused"), default="fused")
    parser.add_argument("--iterations", type=positive_int, default=40000, metavar="N")
    parser.add_argument("--batch-size", type=positive_int, default=4, metavar="B",
                        help="images per step (per rank under torchrun)")
    parser.add_argument("--image-size", type=positive_int, default=256, metavar="S",
                        help="training crop size (short side resized to S, random SxS crop)")
    parser.add_argument("--style-size", type=positive_int, default=None, metavar="S",
                        help="short side of the style image (default: --image-size)")
    parser.add_argument("--vgg-weights", default=None, metavar="FILE|random",
                        help="torchvision-format VGG weights; default: torch hub cache, else "
                             "download; 'random' = untrained network (smoke tests only)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=1000, metavar="N")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly from --output/checkpoint.pth")
    parser.add_argument("--seed", type=int, default=42, metavar="N")
    parser.add_argument("--preset", choices=("examples", "johnson", "ulyanov"), default="examples",
                        help="loss layers and weights of a published setup")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default: 1e-3; 1e-4 for --arch adain)")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine", "step"), default="cosine")
    parser.add_argument("--content-weight", type=float, default=None)
    parser.add_argument("--style-weight", type=float, default=None)
    parser.add_argument("--tv-weight", type=float, default=None)
    parser.add_argument("--content-layers", default=None, metavar="L,L",
                        help="e.g. relu2_2 (overrides the preset)")
    parser.add_argument("--style-layers", default=None, metavar="L,L,...",
                        help="e.g. relu1_2,relu2_2,relu3_3,relu4_3 (overrides the preset)")
    parser.add_argument("--workers", type=non_negative_int, default=None, metavar="N",
                        help="data-loader worker processes that decode, resize and crop ahead of "
                             "the step (default: 2, at most the CPU count - 1). A data set whose "
                             "decoded images fit STYLIZE_FAST_TRAIN_CACHE_MB (default 1024; 0: "
                             "off) is decoded once up front and the workers only crop")
    parser.add_argument("--amp", nargs="?", const="auto", default=None,
                        choices=("auto", "bfloat16", "float16"),
                        help="mixed precision (default: float32); alone: float16 on GPU, "
                             "bfloat16 on a CPU with AVX512-BF16 (float32 on other CPUs). "
                             "Weights, optimizer state and losses stay float32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="train in the channels_last memory format (batch, weights, "
                             "activations); default: on for --norm fused, whose kernels are "
                             "channels_last-native; a resumed run keeps its checkpoint's choice")
    parser.add_argument("--sample-every", type=positive_int, default=500, metavar="N")
    parser.add_argument("--log-every", type=positive_int, default=50, metavar="N")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--temporal-weight", type=non_negative_float, default=0.0, metavar="W",
                        help="temporal consistency for video (default 0: off): each batch also "
                             "trains on a synthetic next frame of known motion, penalising "
                             "output changes beyond the input's luminance change (ReCoNet loss, "
                             "no flow network); 30 is a good start (docs/temporal.md)")
    parser.add_argument("--stop-at", type=positive_int, default=None, metavar="N",
                        help="stop after iteration N with a checkpoint, as if interrupted")


def config_from_args(args: argparse.Namespace):
    from ..training.trainer import TrainConfig

    if args.arch == "adain":
        return adain_config_from_args(args)
    if args.style_data is not None:
        raise ValueError("--style-data is for --arch adain; a generator trains on --style "
                         "image(s)")
    return TrainConfig(
        style=args.style, add_style=args.add_style, model=args.model,
        data=args.data, output=args.output, arch=args.arch, norm=args.norm,
        iterations=args.iterations, batch_size=args.batch_size, image_size=args.image_size,
        style_size=args.style_size, vgg_weights=args.vgg_weights,
        checkpoint_every=args.checkpoint_every, resume=args.resume, seed=args.seed,
        preset=args.preset, lr=1e-3 if args.lr is None else args.lr,
        lr_schedule=args.lr_schedule,
        content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, content_layers=args.content_layers,
        style_layers=args.style_layers, workers=args.workers, amp=args.amp,
        channels_last=args.channels_last, sample_every=args.sample_every,
        log_every=args.log_every, device=args.device, progress=not args.no_progress,
        stop_at=args.stop_at, temporal_weight=args.temporal_weight)


def adain_config_from_args(args: argparse.Namespace):
    from ..training.adain import AdaINTrainConfig

    if args.style_data is None:
        raise ValueError("--arch adain trains on a folder of style images: pass --style-data DIR")
    if args.style or args.add_style or args.model:
        raise ValueError("--arch adain takes its styles from --style-data; --style, "
                         "--add-style and --model are for the generators")
    if args.temporal_weight:
        raise ValueError("--temporal-weight trains the generators (--arch johnson / texture); "
                         "--arch adain does not support it")
    return AdaINTrainConfig(
        data=args.data, style_data=args.style_data, output=args.output,
        iterations=args.iterations, batch_size=args.batch_size, image_size=args.image_size,
        lr=1e-4 if args.lr is None else args.lr, vgg_weights=args.vgg_weights,
        checkpoint_every=args.checkpoint_every, resume=args.resume, seed=args.seed,
        workers=args.workers, device=args.device, progress=not args.no_progress,
        log_every=args.log_every, stop_at=args.stop_at, amp=args.amp,
        **({"content_weight": args.content_weight} if args.content_weight is not None else {}),
        **({"style_weight": args.style_weight} if args.style_weight is not None else {}))


def run(args: argparse.Namespace) -> int:
    from ..training.trainer import train

    config = config_from_args(args)
    if args.arch == "adain":
        from ..training.adain import train_adain

        result = train_adain(config)
    else:
        result = train(config)
    return 0 if result.iteration >= args.iterations or args.stop_at else 130
