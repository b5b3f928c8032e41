"""stylize_fast: fast feed-forward neural style transfer.

Fused instance-norm + activation and padded-convolution kernels (C++ CPU, CUDA, Triton, with a
plain PyTorch reference), drop-in layers, both generators of Ulyanov et al. (2016), training
and real-time inference.
"""

from . import backends, config, functional, ops  # noqa: F401  (ops registers every backend)
from ._version import __version__
from .nn import ConditionalInstanceNorm2d, FusedInstanceNorm2d, PaddedConv2d, fuse

__all__ = ["__version__", "backends", "config", "functional", "models", "inference", "training", "Stylizer",
           "ConditionalInstanceNorm2d", "FusedInstanceNorm2d", "PaddedConv2d", "fuse"]


def __getattr__(name: str):
    # Heavier subpackages load on first use, so `import stylize_fast` stays quick.
    import importlib

    if name in ("models", "testing", "inference", "export", "training"):
        return importlib.import_module(f"{__name__}.{name}")
    if name == "Stylizer":
        return importlib.import_module(f"{__name__}.inference").Stylizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
