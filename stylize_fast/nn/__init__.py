"""Layers: drop-in fused replacements for PyTorch modules, and ``fuse`` to convert models."""

import importlib.util

from .fuse import fuse
from .instance_norm import FusedInstanceNorm2d

__all__ = ["FusedInstanceNorm2d", "fuse"]

if importlib.util.find_spec(f"{__name__}.padded_conv") is not None:
    from .padded_conv import PaddedConv2d  # noqa: F401  (also registers its fuse pass)

    __all__.append("PaddedConv2d")
