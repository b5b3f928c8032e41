"""Layers: drop-in fused replacements for PyTorch modules, and ``fuse`` to convert models."""

from .fuse import fuse
from .instance_norm import FusedInstanceNorm2d
from .padded_conv import PaddedConv2d  # also registers its fuse pass

__all__ = ["FusedInstanceNorm2d", "PaddedConv2d", "fuse"]
