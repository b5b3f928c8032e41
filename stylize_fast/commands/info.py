"""stylize-fast info: versions, available backends, options (stylize_fast.config), how the
extension was built; with ``--model M``, what a model file holds (architecture, styles)."""

from __future__ import annotations

import argparse
import json
import platform

HELP = "print versions, available backends and how the extension was built"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--model", default=None, metavar="M",
                        help="describe this model file instead: architecture, options, "
                             "parameters, styles (with --thumbnails DIR, their thumbnails)")
    parser.add_argument("--thumbnails", default=None, metavar="DIR",
                        help="with --model: write each style's stored thumbnail as a PNG here")


def describe_model(path: str) -> dict:
    """What ``path`` holds: architecture, options, parameter count, styles (names, and whether
    thumbnails are stored), training metadata."""
    from ..models import load_checkpoint
    from ..training.styles import style_names, style_thumbnails

    ckpt = load_checkpoint(path)
    meta = ckpt["metadata"]
    styles = int(ckpt["options"].get("styles", 1))
    params = sum(int(t.numel()) for k, t in ckpt["state_dict"].items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    info = {"model": path, "arch": ckpt["arch"], "source": ckpt["source"],
            "options": ckpt["options"], "parameters": params}
    if ckpt["arch"] == "AdaINNet":
        info["styles"] = "any (AdaIN: pass --style IMAGE to stylize)"
    else:
        info["styles"] = style_names(meta, styles)
        info["style_thumbnails"] = style_thumbnails(meta, styles) is not None
    for key in ("iterations", "loss_network", "extends", "versions"):
        if key in meta:
            info[key] = meta[key]
    return info


def write_thumbnails(path: str, folder: str) -> list[str]:
    import os

    from PIL import Image

    from ..models import load_checkpoint
    from ..training.styles import style_names, style_thumbnails

    ckpt = load_checkpoint(path)
    styles = int(ckpt["options"].get("styles", 1))
    thumbs = style_thumbnails(ckpt["metadata"], styles)
    if thumbs is None:
        raise ValueError(f"--thumbnails: {path} stores no style thumbnails")
    os.makedirs(folder, exist_ok=True)
    written = []
    for k, (name, thumb) in enumerate(zip(style_names(ckpt["metadata"], styles), thumbs)):
        out = os.path.join(folder, f"style_{k:02d}_{os.path.splitext(os.path.basename(name))[0]}"
                                   f".png")
        Image.fromarray(thumb.permute(1, 2, 0).numpy()).save(out)
        written.append(out)
    return written


def collect() -> dict:
    import torch

    from .. import __version__, _extension, backends, config

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "stylize_fast": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "backends": backends.available(),
        "triton_interpreted": backends.triton_interpreted(),
        "forced_backend": backends.forced(),
        "options": config.values(),
        "ops": {op: sorted(backends.implementations(op)) for op in ("instance_norm",
                                                                     "padded_conv2d")},
        "build": _extension.build_info(),
    }


def _run_model(args: argparse.Namespace) -> int:
    info = describe_model(args.model)
    if args.thumbnails:
        info["thumbnail_files"] = write_thumbnails(args.model, args.thumbnails)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    for key, value in info.items():
        if key == "styles" and isinstance(value, list):
            print(f"{'styles':>20}: {len(value)}")
            for k, name in enumerate(value):
                print(f"{'':>20}  {k}: {name}")
        else:
            print(f"{key:>20}: {value}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.thumbnails and not args.model:
        raise ValueError("--thumbnails needs --model M")
    if args.model:
        return _run_model(args)
    info = collect()
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    build = info.pop("build")
    for key, value in info.items():
        print(f"{key:>20}: {value}")
    print(f"{'build':>20}: {build.get('reason')}")
    for key in ("cuda_arch_list", "cpu_isa_copies", "cxx_flags", "nvcc_flags", "extension_error"):
        if build.get(key):
            print(f"{'':>20}  {key}: {build[key]}")
    return 0
