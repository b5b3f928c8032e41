"""stylize-fast experiment: the paper's normalisation experiment (both generators x batch norm,
IN-train/BN-test, instance norm, fused instance norm) under one training budget."""

from __future__ import annotations

import argparse

HELP = "train both generators with each normalisation and compare them on held-out images"


def _contrasts(text: str) -> list[tuple[float, float]]:
    pairs = []
    for item in text.split(";"):
        if item.strip():
            a, b = item.split(",")
            pairs.append((float(a), float(b)))
    if not pairs:
        raise argparse.ArgumentTypeError("give pairs like '0.5,0;0.5,64'")
    return pairs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="results.csv, results.md, grid_<arch>.png, runs/")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="content images for training (default: synthetic ones)")
    parser.add_argument("--held-out", default=None, metavar="DIR",
                        help="images to evaluate on (default: synthetic ones)")
    parser.add_argument("--style", default=None, metavar="IMAGE",
                        help="style image (default: a synthetic pattern)")
    parser.add_argument("--archs", default="johnson,texture", help="comma-separated generators")
    parser.add_argument("--variants", default="bn,in_train_bn_test,in,fused",
                        help="comma-separated normalisation variants")
    parser.add_argument("--iterations", type=int, default=80, metavar="N")
    parser.add_argument("--batch-size", type=int, default=2, metavar="B")
    parser.add_argument("--image-size", type=int, default=64, metavar="S",
                        help="multiple of 32")
    parser.add_argument("--vgg-weights", default="random", metavar="FILE|random|hub",
                        help="'random' (default; labelled untrained), a torchvision file, or "
                             "'hub' for the torch hub cache / download")
    parser.add_argument("--preset", choices=("examples", "johnson", "ulyanov"), default="examples")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--contrasts", type=_contrasts, default=None, metavar="A,B;A,B",
                        help="contrast/brightness pairs (default: 0.5,0;0.5,64;1.5,-64;2,-128)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--speed-check", action="store_true",
                        help="instead: time a training step of the fused JohnsonNet vs plain "
                             "PyTorch layers (float32 and bfloat16) and split it by component; "
                             "writes speed.json into --output")
    parser.add_argument("--repeats", type=int, default=3, help="--speed-check repeats")


def run(args: argparse.Namespace) -> int:
    from ..training.experiment import (
        DEFAULT_CONTRASTS,
        ExperimentConfig,
        markdown_table,
        run_experiment,
    )

    if args.speed_check:
        import json
        import os

        from ..training.experiment import speed_check

        result = speed_check(batch_size=args.batch_size, image_size=args.image_size,
                             repeats=args.repeats, device=args.device or "cpu", seed=args.seed)
        os.makedirs(args.output, exist_ok=True)
        with open(os.path.join(args.output, "speed.json"), "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(json.dumps({k: v for k, v in result.items() if k != "times"}, indent=1,
                         default=str))
        return 0
    cfg = ExperimentConfig(
        output=args.output, data=args.data, held_out=args.held_out, style=args.style,
        archs=[a for a in args.archs.split(",") if a], iterations=args.iterations,
        variants=[v for v in args.variants.split(",") if v], batch_size=args.batch_size,
        image_size=args.image_size,
        vgg_weights=None if args.vgg_weights == "hub" else args.vgg_weights,
        preset=args.preset, lr=args.lr, seed=args.seed, workers=args.workers, device=args.device,
        contrasts=args.contrasts or DEFAULT_CONTRASTS, progress=not args.no_progress)
    rows = run_experiment(cfg)
    print(markdown_table(rows))
    return 0
