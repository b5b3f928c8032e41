"""The picture on docs/styles.md: one content photograph under every style of a multi-style
JohnsonNet, a row of blends between two of its styles, and (with --adain-iterations > 0) the
same photograph through an AdaIN decoder with each style image.

Everything is trained here, on scikit-image's bundled photographs (a docs/test dependency):
content crops from astronaut, coffee, chelsea, rocket and others, style images from the
colourful ones. With ``--vgg-weights random`` (the default: no download happens here) the loss
network is untrained and the picture says so: it shows what the software does -- one model,
several styles, blends, arbitrary styles -- not what a well-trained model looks like.

    python scripts/style_gallery.py --output docs/img/styles_grid.png

Writes the PNG and a JSON record (``--record``) of what was trained and how long it took.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch
from photos import photo  # scripts/photos.py (this folder is on sys.path)
from PIL import Image, ImageDraw

CONTENT = ("astronaut", "coffee", "chelsea", "rocket", "horse", "camera", "clock", "coins")
STYLES = ("colorwheel", "immunohistochemistry", "hubble_deep_field", "retina")
SHOWN = "astronaut"
TILE = 160




def _write_photos(folder: str) -> tuple[str, list[str]]:
    data_dir = os.path.join(folder, "content")
    os.makedirs(data_dir)
    for name in CONTENT:
        Image.fromarray(photo(name)).save(os.path.join(data_dir, f"{name}.png"))
    styles = []
    for name in STYLES:
        path = os.path.join(folder, f"{name}.png")
        Image.fromarray(photo(name)).save(path)
        styles.append(path)
    return data_dir, styles


def _tile(image) -> Image.Image:
    if isinstance(image, torch.Tensor):
        image = image.detach().float().clamp(0, 255).round().to(torch.uint8)
        image = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    w, h = image.size
    side = min(w, h)
    image = image.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
    return image.resize((TILE, TILE), Image.Resampling.BICUBIC)


def _grid(rows: list[tuple[str, list[tuple[str, Image.Image]]]], title: str) -> Image.Image:
    label_w, caption_h, title_h = 150, 16, 22
    cols = max(len(tiles) for _, tiles in rows)
    grid = Image.new("RGB", (label_w + cols * TILE, title_h + len(rows) * (TILE + caption_h)),
                     "white")
    draw = ImageDraw.Draw(grid)
    draw.text((4, 4), title, fill="black")
    for r, (label, tiles) in enumerate(rows):
        top = title_h + r * (TILE + caption_h)
        draw.text((4, top + TILE // 2), label, fill="black")
        for c, (caption, tile) in enumerate(tiles):
            grid.paste(tile, (label_w + c * TILE, top))
            draw.text((label_w + c * TILE + 2, top + TILE + 2), caption[:24], fill="black")
    return grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="docs/img/styles_grid.png")
    parser.add_argument("--record", default="docs/results/styles_gallery.json")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--adain-iterations", type=int, default=150)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--vgg-weights", default="random",
                        help="VGG-16 (generator) / VGG-19 (AdaIN) weights: 'random' or None for "
                             "the hub cache; a file path is used for the generator only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import stylize_fast as sf
    from stylize_fast.training.trainer import TrainConfig, train

    random_vgg = args.vgg_weights == "random"
    record: dict = {"iterations": args.iterations, "image_size": args.image_size,
                    "loss_network": "random (untrained)" if random_vgg else args.vgg_weights,
                    "content": list(CONTENT), "styles": list(STYLES)}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, styles = _write_photos(tmp)
        start = time.perf_counter()
        result = train(TrainConfig(
            style=styles, data=data_dir, output=os.path.join(tmp, "multi"), arch="johnson",
            norm="fused", iterations=args.iterations, batch_size=4, image_size=args.image_size,
            vgg_weights=None if args.vgg_weights == "none" else args.vgg_weights,
            checkpoint_every=args.iterations, seed=args.seed, workers=0,
            sample_every=args.iterations, log_every=50, progress=True))
        record["multi_style_seconds"] = round(time.perf_counter() - start, 1)
        history = result.history
        record["multi_style_loss_first_last"] = [history[0]["total"], history[-1]["total"]]
        content = torch.from_numpy(photo(SHOWN)).permute(2, 0, 1).float()
        model = sf.models.load(result.final_model)
        rows = []
        tiles = [("content", _tile(content))]
        for k, name in enumerate(STYLES):
            out = sf.Stylizer(model, style=k, tune_allocator=False).stylize_tensor(content)
            tiles.append((f"style {k}: {name}", _tile(out)))
        rows.append(("one model,\n4 styles", tiles))
        rows.append(("style images", [("", _tile(np.zeros((8, 8, 3), np.uint8) + 255))] + [
            (name, _tile(photo(name))) for name in STYLES]))
        blends = []
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            weights = [1 - t, t, 0.0, 0.0]
            out = sf.Stylizer(model, style=weights, tune_allocator=False).stylize_tensor(content)
            blends.append((f"{1 - t:.2f} s0 + {t:.2f} s1", _tile(out)))
        rows.append(("blend of\nstyles 0 and 1", blends))

        if args.adain_iterations > 0:
            from stylize_fast.training.adain import AdaINTrainConfig, train_adain

            style_dir = os.path.join(tmp, "styles")
            os.makedirs(style_dir)
            for path in styles:
                os.link(path, os.path.join(style_dir, os.path.basename(path)))
            start = time.perf_counter()
            adain = train_adain(AdaINTrainConfig(
                data=data_dir, style_data=style_dir, output=os.path.join(tmp, "adain"),
                iterations=args.adain_iterations, batch_size=4, image_size=args.image_size,
                vgg_weights="random" if random_vgg else None,
                checkpoint_every=args.adain_iterations, seed=args.seed, workers=0,
                log_every=50, sample_every=args.adain_iterations))
            record["adain_seconds"] = round(time.perf_counter() - start, 1)
            record["adain_iterations"] = args.adain_iterations
            net = sf.models.load(adain.final_model)
            tiles = [("content", _tile(content))]
            for name, path in zip(STYLES, styles):
                out = sf.Stylizer(net, style_images=[path],
                                  tune_allocator=False).stylize_tensor(content)
                tiles.append((f"AdaIN: {name}", _tile(out)))
            rows.append(("AdaIN, any\nstyle image", tiles))

    title = (f"stylize_fast: one JohnsonNet with {len(STYLES)} styles ({args.iterations} "
             f"iterations at {args.image_size} px)"
             + (" - LOSS NETWORK UNTRAINED (random weights): a demonstration of the software, "
                "not of trained quality" if random_vgg else ""))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    _grid(rows, title).save(args.output)
    if args.record:
        os.makedirs(os.path.dirname(os.path.abspath(args.record)), exist_ok=True)
        with open(args.record, "w") as f:
            json.dump(record, f, indent=1)
    print(f"wrote {args.output}" + (f" and {args.record}" if args.record else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
