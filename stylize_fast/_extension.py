"""Loads the compiled operator library (stylize_fast._C) and reports how it was built."""

from __future__ import annotations

import functools
import json
import os
import warnings

import torch

NAMESPACE = "stylize_fast"


def _built_against() -> str | None:
    """The torch version setup.py recorded for this build, if any."""
    try:
        with open(os.path.join(os.path.dirname(__file__), "_build_info.json")) as f:
            return json.load(f).get("torch")
    except (OSError, ValueError):
        return None


def _load() -> str | None:
    try:
        from . import _C  # noqa: F401  (importing runs the TORCH_LIBRARY registrations)
    except ImportError as exc:
        error = f"{type(exc).__name__}: {exc}"
        built = _built_against()
        if built and built != torch.__version__:
            # Typically an isolated `pip install .`: the build env fetched another torch. Every op
            # would quietly run the reference backend, so say it once here.
            error = (f"the extension was built against torch {built} but torch {torch.__version__} "
                     "is running; rebuild it with `pip install --no-build-isolation .` "
                     f"({error})")
            warnings.warn(f"stylize_fast: {error}", RuntimeWarning, stacklevel=2)
        return error
    if not hasattr(torch.ops.stylize_fast, "set_option"):
        # Options reach C++ through this op (stylize_fast/config.py); an older build lacks it.
        return "the compiled extension is older than this package (no set_option op); rebuild it"
    return None


# Resolved once at import: plain constants, so code traced by torch.compile can read them.
_LOAD_ERROR: str | None = _load()
_CUDA_COMPILED: bool = _LOAD_ERROR is None and bool(torch.ops.stylize_fast.compiled_with_cuda())


def load_error() -> str | None:
    """None when the C++ extension is loaded; otherwise why it is not."""
    return _LOAD_ERROR


def loaded() -> bool:
    return _LOAD_ERROR is None


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the extension registered a kernel for stylize_fast::<op> under dispatch_key
    ("CPU" or "CUDA")."""
    if not loaded():
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{op}", dispatch_key)


def compiled_with_cuda() -> bool:
    """Whether the extension was compiled with the CUDA kernels (csrc/cuda)."""
    return _CUDA_COMPILED


@functools.cache
def build_info() -> dict:
    """What setup.py recorded when the extension was built (flags, CUDA, arch list)."""
    path = os.path.join(os.path.dirname(__file__), "_build_info.json")
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        info = {"reason": "no build record (package not built with setup.py)"}
    info["extension_loaded"] = loaded()
    info["extension_error"] = load_error()
    info["cuda_compiled"] = compiled_with_cuda()
    return info
