"""stylize-fast info: versions, available backends, options (stylize_fast.config), how the
extension was built."""

from __future__ import annotations

import argparse
import json
import platform

HELP = "print versions, available backends and how the extension was built"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


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


def run(args: argparse.Namespace) -> int:
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
