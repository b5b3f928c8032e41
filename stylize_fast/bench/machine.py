"""What a benchmark ran on: recorded in every CSV row, because times mean nothing without it."""

from __future__ import annotations

import functools
import os
import platform
from datetime import datetime, timezone

import torch

from . import allocator


@functools.cache
def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), or the best the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def last_level_cache_bytes() -> int:
    """Size of the CPU's largest cache (bytes); 32 MiB when it cannot be read."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            try:
                with open(os.path.join(base, entry, "size")) as f:
                    text = f.read().strip().upper()
            except OSError:
                continue
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            digits = text.rstrip("KMG")
            if digits.isdigit():
                best = max(best, int(digits) * scale)
    except OSError:
        pass
    return best or 32 << 20


def cache_bytes(device: str) -> int:
    """Bytes of cache the timed inputs must exceed so no repeat finds its input cached."""
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        return int(getattr(props, "L2_cache_size", 0) or 50 << 20)
    return last_level_cache_bytes()


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.backends.cpu.get_cpu_capability()})"


def threads_from_env() -> int | None:
    """The thread count a benchmark worker process is told to use (STYLIZE_FAST_BENCH_THREADS,
    set by the parent, read by stylize_fast.config), or None."""
    from .. import config

    return config.get("bench_threads")


def collect(device: str = "cpu") -> dict[str, str]:
    """Machine columns shared by every row of one run."""
    from .. import __version__, backends

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    avail = backends.available()
    info = {
        "device": device_name(device),
        "cpu_model": cpu_model(),
        "threads": str(torch.get_num_threads()),
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "stylize_fast_version": __version__,
        "backends_available": "+".join(b for b in backends.BACKENDS if avail[b]),
        "allocator": allocator.short(),
        "allocator_detail": allocator.setting(),
        "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if device.startswith("cuda"):
        info["allocator_detail"] += "; PYTORCH_CUDA_ALLOC_CONF=" + os.environ.get(
            "PYTORCH_CUDA_ALLOC_CONF", "")
    return info


def describe(info: dict[str, str]) -> str:
    """One line for the console and docs."""
    return (f"{info['device']} | {info['cpu_model']} | {info['threads']} threads | "
            f"torch {info['torch_version']} | triton {info['triton_version'] or '-'} | "
            f"backends {info['backends_available']} | allocator: {info['allocator_detail']} | "
            f"python {platform.python_version()}")
