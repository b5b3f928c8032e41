"""sf.fuse: rewrite a model to use the fused layers, outputs unchanged, weights carried over.

Passes run in order; each takes the model and rewrites it in place. The instance-norm pass lives
here; the padded-convolution pass registers itself from nn/padded_conv.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from .instance_norm import FusedInstanceNorm2d

FusePass = Callable[[nn.Module], None]
_PASSES: list[FusePass] = []


def register_pass(fuse_pass: FusePass) -> FusePass:
    """Add a rewrite pass to sf.fuse (used as a decorator by the layer modules)."""
    if fuse_pass not in _PASSES:
        _PASSES.append(fuse_pass)
    return fuse_pass


def _activation_of(module: nn.Module) -> tuple[str, float] | None:
    if type(module) is nn.ReLU:
        return "relu", 0.01
    if type(module) is nn.LeakyReLU:
        return "leaky_relu", float(module.negative_slope)
    return None


@register_pass
def fuse_instance_norm(model: nn.Module) -> None:
    """nn.InstanceNorm2d -> FusedInstanceNorm2d; inside nn.Sequential, an nn.ReLU / nn.LeakyReLU
    that directly follows one is folded into it (and replaced by nn.Identity, so indices and
    state_dict keys stay)."""
    for parent in list(model.modules()):
        names = list(parent._modules)
        for i, name in enumerate(names):
            child = parent._modules[name]
            if type(child) is not nn.InstanceNorm2d:
                continue
            activation = None
            if isinstance(parent, nn.Sequential) and i + 1 < len(names):
                activation = _activation_of(parent._modules[names[i + 1]])
            fused = FusedInstanceNorm2d.from_instance_norm(
                child, *(activation if activation else (None, 0.01)))
            parent._modules[name] = fused
            if activation:
                parent._modules[names[i + 1]] = nn.Identity()


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return a model whose outputs match ``model``'s, with instance norms (+ a following ReLU /
    LeakyReLU) and padding + convolution pairs replaced by stylize_fast's fused layers.

    Args:
        model: any nn.Module.
        inplace: rewrite ``model`` itself instead of a deep copy.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse: model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    for fuse_pass in list(_PASSES):
        fuse_pass(model)
    return model
