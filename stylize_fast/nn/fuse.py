"""sf.fuse: rewrite a model to use the fused layers, outputs unchanged, weights carried over.

Passes run in order; each takes the model and rewrites it in place. The instance-norm pass lives
here; the padded-convolution pass registers itself from nn/padded_conv.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.fx
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


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    parent._modules[name] = module


def _traced_activation_folds(model: nn.Module) -> dict[str, tuple[str, float] | None]:
    """Find, by tracing the model with torch.fx, activation modules (nn.ReLU / nn.LeakyReLU,
    possibly shared) that are applied only to outputs of nn.InstanceNorm2d modules which feed
    nothing else. Returns {instance-norm path: activation} plus {activation path: None} for the
    activation modules that become nn.Identity. Untraceable models give {} (no folding)."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # data-dependent control flow etc.: fall back to the structural pass
        return {}
    modules = dict(model.named_modules())
    norm_calls: dict[str, list[torch.fx.Node]] = {}
    act_calls: dict[str, list[torch.fx.Node]] = {}
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        module = modules.get(node.target)
        if type(module) is nn.InstanceNorm2d:
            norm_calls.setdefault(node.target, []).append(node)
        elif _activation_of(module) is not None:
            act_calls.setdefault(node.target, []).append(node)

    folds: dict[str, tuple[str, float] | None] = {}
    for act_path, calls in act_calls.items():
        sources = []
        for node in calls:
            src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
            if not (isinstance(src, torch.fx.Node) and src.target in norm_calls
                    and len(src.users) == 1):
                break
            sources.append(src.target)
        else:
            # Every call of each source norm must feed this activation module and nothing else.
            if all(_feeds_only(norm_calls[t], act_path) for t in sources):
                activation = _activation_of(modules[act_path])
                folds.update({t: activation for t in sources})
                folds[act_path] = None
    return folds


def _feeds_only(norm_nodes: list[torch.fx.Node], act_path: str) -> bool:
    return all(len(n.users) == 1 and next(iter(n.users)).target == act_path for n in norm_nodes)


@register_pass
def fuse_instance_norm(model: nn.Module) -> None:
    """nn.InstanceNorm2d -> FusedInstanceNorm2d. An nn.ReLU / nn.LeakyReLU that only ever
    follows instance norms is folded into them and replaced by nn.Identity (found by torch.fx
    tracing, or structurally inside nn.Sequential), so state_dict keys stay the same."""
    for path, activation in _traced_activation_folds(model).items():
        module = model.get_submodule(path)
        if activation is None:
            _set_submodule(model, path, nn.Identity())
        else:
            _set_submodule(model, path, FusedInstanceNorm2d.from_instance_norm(module, *activation))
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
    LeakyReLU) and padding + convolution pairs replaced by stylize_fast's fused layers, and --
    where torch.fx can trace the model -- each instance norm that feeds only a convolution
    applied as that convolution loads its input (normalize-on-load: the model's forward is
    replaced by its traced form; layers and state_dict keys stay).

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
