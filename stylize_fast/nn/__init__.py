"""Layers: drop-in fused replacements for PyTorch modules, and ``fuse`` to convert models."""

from . import norm_on_load  # noqa: E402,F401  (registers the normalize-on-load pass, last)
from .conditional_instance_norm import ConditionalInstanceNorm2d, StyleSelection, select_styles
from .fuse import fuse
from .instance_norm import FusedInstanceNorm2d
from .padded_conv import PaddedConv2d  # also registers its fuse pass

__all__ = ["ConditionalInstanceNorm2d", "FusedInstanceNorm2d", "PaddedConv2d", "StyleSelection",
           "fuse", "select_styles"]
