"""Normalize-on-load execution of the generators' layer chains.

A fused instance-norm layer reads its input twice (statistics, then normalise) and writes a
normalised copy that the next convolution reads again. Here the copy never exists: the producing
convolution returns its raw output with that output's statistics (gathered in its epilogue), and
the consuming convolution applies the norm, its affine and activation, the upsampling and the
padding as it reads (``ops.norm_conv2d``). A raw tensor whose norm is still to be applied
travels as a :class:`Pending`.

With autograd recording, the statistics come from ``ops.instance_norm_stats`` (differentiable)
instead of the epilogue, so training runs the same schedule and gets the plain model's gradients.
"""

from __future__ import annotations

import types
from typing import NamedTuple

import torch
from torch import nn

from .. import config
from ..ops import norm_conv as _norm_conv
from ..ops.common import activation_code
from .conditional_instance_norm import ConditionalInstanceNorm2d, style_rows
from .fuse import register_pass
from .instance_norm import FusedInstanceNorm2d
from .padded_conv import PaddedConv2d


class Pending(NamedTuple):
    """``raw`` waiting for its instance norm: ``act(raw * scale + shift)`` per (n, c)."""

    raw: torch.Tensor
    scale: torch.Tensor  # (N, C), statistics dtype
    shift: torch.Tensor
    activation: int
    negative_slope: float


def enabled() -> bool:
    """Whether fused generators run normalize-on-load (config option ``no_norm_on_load``
    turns it off, for comparison)."""
    return not config.get("no_norm_on_load")


def hooked(model: nn.Module) -> bool:
    """Whether any module of ``model`` (or every module, globally) has forward hooks: the
    normalize-on-load schedule calls the layers' parameters, not the layers, so a model being
    observed or modified through hooks runs its layers one by one instead."""
    from torch.nn.modules import module as _module

    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def norm_supported(norm: nn.Module) -> bool:
    """Norm layers whose statistics come from their input alone (no running statistics)."""
    if isinstance(norm, ConditionalInstanceNorm2d):
        return norm.fused
    return (isinstance(norm, FusedInstanceNorm2d) and not norm.track_running_stats)


def conv_supported(conv: nn.Module) -> bool:
    """Convolutions norm_conv2d replaces: PaddedConv2d without activation, and nn.Conv2d with
    zero padding, groups 1, dilation 1."""
    if isinstance(conv, PaddedConv2d):
        return getattr(conv, "activation", None) is None
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def _affine(norm: nn.Module, style, batch: int) -> tuple[torch.Tensor | None,
                                                          torch.Tensor | None]:
    if isinstance(norm, ConditionalInstanceNorm2d):
        return style_rows(norm.weight, style), style_rows(norm.bias, style)
    return norm.weight, norm.bias


def _recording(*tensors) -> bool:
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def pending(norm: nn.Module, raw: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
            style=None) -> Pending:
    """``norm`` (a fused instance norm with its activation) of ``raw``, deferred to the next
    convolution's loads; ``mean``, ``rstd`` are raw's statistics."""
    weight, bias = _affine(norm, style, raw.shape[0])
    scale, shift = _norm_conv.norm_scale_shift(raw, mean, rstd, weight, bias,
                                               fn=type(norm).__name__)
    return Pending(raw, scale, shift, int(activation_code(norm.activation)),
                   float(norm.negative_slope))


def stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance-norm statistics of ``x`` (one read)."""
    return _norm_conv.instance_norm_stats(x, eps)


def conv(layer: nn.Module, x: torch.Tensor | Pending, *, stats_eps: float | None = None,
         residual: torch.Tensor | None = None):
    """``layer(x)`` for a PaddedConv2d / nn.Conv2d (norm applied on load when ``x`` is
    :class:`Pending`); with ``stats_eps``, ``(out, mean, rstd)`` where mean and rstd are the
    output's instance-norm statistics."""
    if isinstance(layer, PaddedConv2d):
        stride, padding, mode = layer.stride, layer.padding, layer.padding_mode
        upsample = getattr(layer, "upsample", 1)
    else:
        stride, padding, mode, upsample = layer.stride, layer.padding, "zeros", 1
    raw = x.raw if isinstance(x, Pending) else x
    norm = None
    if isinstance(x, Pending):
        norm = (x.scale, x.shift, x.activation, x.negative_slope)
    # Under autograd the statistics must be differentiable: taken from the output afterwards.
    differentiable = _recording(raw, layer.weight, residual,
                                *(norm[:2] if norm is not None else ()))
    epilogue_eps = None if differentiable else stats_eps
    fn = "norm_conv2d"
    stride, padding, code, act, _, _, upsample, eps = _norm_conv.check_args(
        raw, layer.weight, layer.bias, stride, padding, mode, activation=None,
        upsample=upsample, norm_activation=None, negative_slope=0.01, has_norm=norm is not None,
        residual=residual, stats_eps=epilogue_eps, fn=fn)
    scale, shift, in_act, slope = norm if norm is not None else (None, None, 0, 0.01)
    out, mean, rstd = _norm_conv.norm_conv2d_checked(raw, scale, shift, in_act, slope,
                                                     layer.weight, layer.bias, stride, padding,
                                                     code, act, upsample, residual, eps)
    if stats_eps is None:
        return out
    if differentiable:
        mean, rstd = stats(out, stats_eps)
    return out, mean, rstd


def normalize(norm: nn.Module, raw: torch.Tensor, mean: torch.Tensor | None = None,
              rstd: torch.Tensor | None = None, style=None,
              residual: torch.Tensor | None = None) -> torch.Tensor:
    """``norm(raw) (+ residual)`` materialised, where a consumer other than a convolution needs
    it (a residual sum): one pass from known statistics (``mean``, ``rstd`` from the producing
    convolution's epilogue) in inference; the layer itself when autograd records or the
    statistics are not known."""
    if mean is None or _recording(raw, residual, *norm.parameters()):
        out = norm(raw, style) if isinstance(norm, ConditionalInstanceNorm2d) else norm(raw)
        return out if residual is None else out + residual
    p = pending(norm, raw, mean, rstd, style)
    return _norm_conv.instance_norm_apply(raw, p.scale, p.shift, p.activation,
                                          p.negative_slope, residual)


# --------------------------------------------------------------------------------------------
# sf.fuse pass: the pattern in an arbitrary (fx-traceable) model


class _LayerTracer(torch.fx.Tracer):
    """Traces a fused model with its fused layers as leaves (their forwards branch on shapes)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (PaddedConv2d, FusedInstanceNorm2d, ConditionalInstanceNorm2d)) \
            or super().is_leaf_module(m, qualname)


def norm_then_conv(x: torch.Tensor, norm: nn.Module, layer: nn.Module) -> torch.Tensor:
    """``layer(norm(x))`` with the norm applied as the convolution loads ``x`` (statistics from
    one read of x); the layers themselves when the option is off or a hook observes them."""
    if not enabled() or any(m._forward_hooks or m._forward_pre_hooks for m in (norm, layer)) \
            or x.dim() != 4:
        return layer(norm(x))
    mean, rstd = stats(x, norm.eps)
    return conv(layer, pending(norm, x, mean, rstd))


@register_pass
def fuse_norm_on_load(model: nn.Module) -> None:
    """Find norm -> [nn.Identity ...] -> convolution chains (the fused instance norm with its
    activation, then a PaddedConv2d -- upsampling folded -- or a zero-padded nn.Conv2d, the
    norm's output feeding nothing else) by tracing ``model`` with torch.fx, and replace the
    model's forward (on this instance) by the traced one calling :func:`norm_then_conv` for
    each: layers, their types, paths and state_dict keys stay. Nothing changes for our
    generators (they schedule it themselves), untraceable models, or models without such a
    chain. (A model with a replaced forward saves with its state_dict, not pickled whole.)"""
    if callable(getattr(model, "norm_on_load", None)):
        return
    try:
        graph = _LayerTracer().trace(model)
    except Exception:  # data-dependent control flow etc.: the per-layer fused model stays
        return
    modules = dict(model.named_modules())
    found = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or not conv_supported(modules.get(node.target)) \
                or len(node.args) != 1 or node.kwargs:
            continue
        chain, src = [], node.args[0]
        while (isinstance(src, torch.fx.Node) and src.op == "call_module"
               and type(modules.get(src.target)) is nn.Identity and len(src.users) == 1):
            chain.append(src)
            src = src.args[0]
        norm = modules.get(src.target) if isinstance(src, torch.fx.Node) and \
            src.op == "call_module" else None
        if not (isinstance(norm, FusedInstanceNorm2d) and norm_supported(norm)
                and len(src.users) == 1 and len(src.args) == 1 and not src.kwargs):
            continue
        with graph.inserting_before(node):
            args = (src.args[0], graph.get_attr(src.target), graph.get_attr(node.target))
            new = graph.call_function(norm_then_conv, args)
        node.replace_all_uses_with(new)
        for dead in [node, *chain, src]:
            graph.erase_node(dead)
        found += 1
    if not found:
        return
    graph.lint()
    # The generated forward reads every layer as self.<path>: bound to the model itself, it
    # uses the model's own layers (a GraphModule would copy only those it calls, flattening
    # the containers).
    traced = torch.fx.GraphModule(model, graph)
    model.forward = types.MethodType(type(traced).forward, model)
