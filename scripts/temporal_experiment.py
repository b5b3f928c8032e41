"""The temporal-consistency experiment of docs/temporal.md: does ``--temporal-weight`` cut the
flicker of a stylised video without costing stylisation?

Two JohnsonNets are trained with the same seed, data, iteration budget and loss network -- one
with ``--temporal-weight W``, one without -- on crops of scikit-image's bundled photographs.
Both then stylise a HELD-OUT synthetic camera-motion video (a photograph neither saw, panned,
zoomed and slightly rotated with sub-pixel steps, frames rounded to 8 bits like a real video),
and the flicker of each stylised video is measured with the package's metric
(``stylize_fast.evaluation.flicker.warping_errors``: optical flow on the input frames,
occlusion-masked mean squared RGB error in [0, 1]). Content and style losses of both models are
evaluated on held-out crops with the same ``PerceptualLoss`` as in training.

The loss network is ``--vgg-weights random`` by default: an UNTRAINED VGG-16 (no download here),
so the losses and pictures say nothing about stylisation quality, only about the trade-off
between the temporal term and the perceptual terms. The record says so.

    python scripts/temporal_experiment.py --temporal-weight 30 --sweep 3 10 100 \
        --record docs/results/temporal_experiment.json

Defaults (96 px crops, batch 4, 200 iterations, lr 1e-2 so that so few iterations train a
textured model) keep the two runs to about two minutes on 2 quiet CPU cores; each ``--sweep``
weight adds one more temporal run. Writes the JSON record, and with ``--frames-dir DIR`` the
input and the stylised videos as PNGs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch
from photos import photo  # scripts/photos.py (this folder is on sys.path)
from PIL import Image

TRAIN = ("astronaut", "chelsea", "rocket", "camera", "clock", "horse", "hubble_deep_field",
         "retina")
HELD_OUT = ("coffee", "coins")  # the video comes from the first
STYLE = "immunohistochemistry"




def _resized(image: np.ndarray, short: int) -> Image.Image:
    pil = Image.fromarray(image)
    scale = short / min(pil.size)
    return pil.resize((max(short, round(pil.size[0] * scale)),
                       max(short, round(pil.size[1] * scale))), Image.BICUBIC)


def write_training_tiles(folder: str, names, tile: int, short: int) -> int:
    """Each photograph resized to short side ``short`` and cut into overlapping ``tile``-sized
    squares (stride tile/2): more distinct crops than the photographs alone. Returns the count."""
    os.makedirs(folder, exist_ok=True)
    count = 0
    for name in names:
        pil = _resized(photo(name), short)
        w, h = pil.size
        step = tile // 2
        for top in range(0, h - tile + 1, step):
            for left in range(0, w - tile + 1, step):
                pil.crop((left, top, left + tile, top + tile)).save(
                    os.path.join(folder, f"{name}_{top:04d}_{left:04d}.png"))
                count += 1
    return count


def held_out_crops(size: int) -> torch.Tensor:
    """``(N, 3, size, size)`` float 0-255: corner and centre crops of the held-out photographs
    resized to short side ``1.5 * size``."""
    crops = []
    for name in HELD_OUT:
        pil = _resized(photo(name), int(1.5 * size))
        w, h = pil.size
        for left, top in ((0, 0), (w - size, 0), ((w - size) // 2, (h - size) // 2),
                          (0, h - size), (w - size, h - size)):
            crop = np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.uint8)
            crops.append(torch.from_numpy(crop.copy()).permute(2, 0, 1).float())
    return torch.stack(crops)


def camera_video(name: str, size: int, frames: int, shift: tuple[float, float] = (1.7, 0.6),
                 zoom: float = 0.004, rotation: float = 0.1) -> list[np.ndarray]:
    """A synthetic camera motion over photograph ``name``: ``frames`` RGB uint8 ``size`` x
    ``size`` frames; per frame the camera moves by ``shift`` pixels (x, y), zooms in by ``zoom``
    and rotates by ``rotation`` degrees (sub-pixel steps: what makes a stylisation flicker).
    Sampled bicubically from the photograph at 1.5x the frame size, rounded to 8 bits."""
    pil = _resized(photo(name), int(1.5 * size))
    w, h = pil.size
    cx0, cy0 = w / 2 - frames * shift[0] / 2, h / 2 - frames * shift[1] / 2
    out = []
    for t in range(frames):
        scale = 1.0 / (1.0 + zoom) ** t  # source pixels per frame pixel
        angle = math.radians(rotation * t)
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        cx, cy = cx0 + shift[0] * t, cy0 + shift[1] * t
        # PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f)
        half = size / 2
        coeffs = (cos, -sin, cx - cos * half + sin * half,
                  sin, cos, cy - sin * half - cos * half)
        frame = pil.transform((size, size), Image.AFFINE, coeffs, resample=Image.BICUBIC)
        out.append(np.asarray(frame, dtype=np.uint8).copy())
    return out


@torch.no_grad()
def stylise(model: torch.nn.Module, frames: list[np.ndarray]) -> list[np.ndarray]:
    model.eval()
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    y = model(x).clamp(0, 255).round().to(torch.uint8)
    return [f.permute(1, 2, 0).numpy().copy() for f in y]


@torch.no_grad()
def held_out_losses(model: torch.nn.Module, loss_fn, images: torch.Tensor) -> dict[str, float]:
    """Content and style loss (weighted as in training) and the unweighted temporal loss of
    synthetic next frames (fixed seeds) on the held-out ``images``, the model in eval mode."""
    from stylize_fast.training.temporal import random_motion, sample_seeds, temporal_loss

    model.eval()
    output = model(images)
    terms = loss_fn(output, images)
    motion = random_motion(images, sample_seeds(12345, 0, 0, images.shape[0]))
    moved = model(motion.next)
    temporal = temporal_loss(output, moved, images, motion.next, motion.flow, motion.mask)
    return {"content": float(terms["content"]), "style": float(terms["style"]),
            "temporal_unweighted": float(temporal)}


def train_one(name: str, root: str, data: str, style: str, args, weight: float):
    from stylize_fast.training.trainer import TrainConfig, train

    config = TrainConfig(style=style, data=data, output=os.path.join(root, name),
                         arch="johnson", norm=args.norm, iterations=args.iterations,
                         batch_size=args.batch_size, image_size=args.image_size,
                         vgg_weights=args.vgg_weights, checkpoint_every=args.iterations,
                         seed=args.seed, workers=0, sample_every=args.iterations,
                         log_every=max(1, args.iterations // 10), progress=args.progress,
                         lr=args.lr, temporal_weight=weight)
    start = time.perf_counter()
    result = train(config)
    return config, result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--temporal-weight", type=float, default=30.0, metavar="W")
    parser.add_argument("--sweep", type=float, nargs="*", default=[], metavar="W",
                        help="also train and report models with these temporal weights")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--norm", default="fused", choices=("fused", "instance", "batch"))
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=16, help="frames of the held-out video")
    parser.add_argument("--vgg-weights", default="random",
                        help="'random' (default: an UNTRAINED VGG-16) or a weights file")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--record", default=None, metavar="JSON", help="write the results here")
    parser.add_argument("--frames-dir", default=None, metavar="DIR",
                        help="also save the input and both stylised videos as PNGs")
    parser.add_argument("--work", default=None, metavar="DIR",
                        help="working folder (default: a temporary one)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from stylize_fast.evaluation.flicker import warping_report
    from stylize_fast.training.data import load_style
    from stylize_fast.training.losses import PerceptualLoss

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.work or tmp
        data = os.path.join(root, "content")
        tiles = write_training_tiles(data, TRAIN, tile=int(1.25 * args.image_size),
                                     short=2 * args.image_size)
        style = os.path.join(root, f"{STYLE}.png")
        Image.fromarray(photo(STYLE)).save(style)

        runs = {}
        sweep = [(f"temporal_w{w:g}", w) for w in args.sweep if w != args.temporal_weight]
        for name, weight in (("baseline", 0.0), ("temporal", args.temporal_weight), *sweep):
            print(f"training {name} (temporal weight {weight}) ...", file=sys.stderr, flush=True)
            config, result, seconds = train_one(name, root, data, style, args, weight)
            runs[name] = {"config": config, "model": result.model, "seconds": seconds,
                          "loss_network": result.loss_network,
                          "last_log": result.history[-1],
                          "step_seconds": float(np.median([h["seconds"]
                                                           for h in result.history]))}

        video = camera_video(HELD_OUT[0], args.image_size, args.frames)
        images = held_out_crops(args.image_size)
        config = runs["baseline"]["config"]
        loss_fn = PerceptualLoss(config.loss_config(), vgg_weights=args.vgg_weights)
        loss_fn.set_style(load_style(style, config.style_size or config.image_size))
        results = {}
        for name, run in runs.items():
            frames = stylise(run["model"], video)
            report = warping_report(frames, video)
            clipped = float(np.mean([(f == 0) | (f == 255) for f in frames]))
            results[name] = {
                "stylised_std": float(np.std(np.stack(frames).astype(np.float64))),
                "stylised_clipped_fraction": clipped,
                "temporal_weight": run["config"].temporal_weight,
                "warping_error": report.warping_error,
                "input_warping_error": report.input_warping_error,
                "valid_fraction": report.valid_fraction,
                **{f"held_out_{k}": v for k, v in held_out_losses(run["model"], loss_fn,
                                                                  images).items()},
                "train_seconds": round(run["seconds"], 1),
                "seconds_per_iteration": round(run["step_seconds"], 3),
                "last_train_log": {k: run["last_log"][k] for k in
                                   ("content", "style", "temporal", "total")
                                   if k in run["last_log"]},
            }
            if args.frames_dir:
                folder = os.path.join(args.frames_dir, name)
                os.makedirs(folder, exist_ok=True)
                for t, frame in enumerate(frames):
                    Image.fromarray(frame).save(os.path.join(folder, f"{t:03d}.png"))
        if args.frames_dir:
            os.makedirs(os.path.join(args.frames_dir, "input"), exist_ok=True)
            for t, frame in enumerate(video):
                Image.fromarray(frame).save(os.path.join(args.frames_dir, "input", f"{t:03d}.png"))

    base, temp = results["baseline"], results["temporal"]
    record = {
        "loss_network": ("random (untrained)" if args.vgg_weights == "random"
                         else runs["baseline"]["loss_network"]),
        "arch": "johnson", "norm": args.norm, "iterations": args.iterations,
        "batch_size": args.batch_size, "image_size": args.image_size, "lr": args.lr,
        "seed": args.seed, "preset": "examples", "temporal_weight": args.temporal_weight,
        "training_tiles": tiles, "train_photos": list(TRAIN), "held_out_photos": list(HELD_OUT),
        "style": STYLE, "video": {"photo": HELD_OUT[0], "frames": args.frames,
                                  "size": args.image_size, "shift_px_per_frame": [1.7, 0.6],
                                  "zoom_per_frame": 0.004, "rotation_deg_per_frame": 0.1},
        "flicker_metric": "stylize_fast.evaluation.flicker.warping_report (DIS flow on the "
                          "input frames, occlusion-masked MSE, RGB in [0, 1])",
        "held_out_losses": f"PerceptualLoss (same config and loss network as training) on "
                           f"{len(images)} crops of {', '.join(HELD_OUT)}",
        "baseline": base, "temporal": temp,
        "sweep": [{"temporal_weight": r["temporal_weight"],
                   "warping_error_ratio": r["warping_error"] / base["warping_error"],
                   "content_ratio": r["held_out_content"] / base["held_out_content"],
                   "style_ratio": r["held_out_style"] / base["held_out_style"],
                   "stylised_std": r["stylised_std"]}
                  for r in sorted(results.values(), key=lambda r: r["temporal_weight"])],
        "warping_error_ratio": temp["warping_error"] / base["warping_error"],
        "content_ratio": temp["held_out_content"] / base["held_out_content"],
        "style_ratio": temp["held_out_style"] / base["held_out_style"],
        "seconds": round(time.perf_counter() - start, 1),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
    }
    record["goal_met"] = bool(record["warping_error_ratio"] <= 0.6
                              and abs(record["content_ratio"] - 1) <= 0.1
                              and abs(record["style_ratio"] - 1) <= 0.1)
    text = json.dumps(record, indent=1)
    print(text)
    if args.record:
        os.makedirs(os.path.dirname(os.path.abspath(args.record)), exist_ok=True)
        with open(args.record, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
