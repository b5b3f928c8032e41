"""PaddedConv2d: a drop-in nn.Conv2d whose padding (reflect / replicate / zeros) is applied inside
the convolution kernel, and the sf.fuse pass that converts padding + convolution pairs to it."""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from ..ops import padded_conv as _ops
from ..ops.common import PADDING_MODE_NAMES
from .fuse import register_pass


class PaddedConv2d(nn.Conv2d):
    """Drop-in replacement for ``nn.Conv2d`` (same ``weight`` / ``bias`` keys, initialisation and
    ``repr``) computing ``conv2d(pad(x, padding, padding_mode), weight, bias, stride)`` without
    building the padded tensor. ``padding_mode`` is ``"reflect"`` (the default), ``"replicate"``
    or ``"zeros"``; groups = 1 and dilation = 1. ``activation`` (keyword-only): None (the default)
    or ``"relu"``, applied in the convolution kernel's output store (conv + ReLU in one kernel);
    it adds no parameter or buffer, so the ``state_dict`` is that of ``nn.Conv2d``.
    ``upsample`` (keyword-only, int >= 1, default 1): nearest upsampling of the input by that
    factor before the padding -- ``F.interpolate(x, scale_factor=s)`` + conv in one layer, folded
    into the CPU Winograd kernel's input read (no upsampled tensor is built or saved).

    Shapes: input ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``; output
    ``(N, C_out, (sH + 2 ph - KH) // sh + 1, (sW + 2 pw - KW) // sw + 1)`` (s = upsample) in the
    input's memory format.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        padding_mode: str = "reflect",
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        activation: str | None = None,
        upsample: int = 1,
    ) -> None:
        _ops.check_activation(activation, fn="PaddedConv2d")
        upsample = _ops.check_upsample(upsample, fn="PaddedConv2d")
        if padding_mode not in PADDING_MODE_NAMES:
            raise ValueError(f"PaddedConv2d: padding_mode must be one of "
                             f"{sorted(PADDING_MODE_NAMES)}, got {padding_mode!r}")
        if isinstance(padding, str):
            raise ValueError(f"PaddedConv2d: padding must be an int or a pair of ints "
                             f"(string padding is not supported), got {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=1, groups=1, bias=bias, padding_mode=padding_mode,
                         device=device, dtype=dtype)
        if min(self.padding) < 0:
            raise ValueError(f"PaddedConv2d: padding must be >= 0, got {padding!r}")
        self.activation = None if activation is None or activation.lower() == "none" \
            else activation.lower()
        self.upsample = upsample

    def extra_repr(self) -> str:
        text = super().extra_repr()
        activation = getattr(self, "activation", None)  # modules pickled before it existed
        if activation is not None:
            text += f", activation={activation!r}"
        if getattr(self, "upsample", 1) != 1:
            text += f", upsample={self.upsample}"
        return text

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        padding_mode: str | None = None,
        extra_padding: tuple[int, int] = (0, 0),
    ) -> PaddedConv2d:
        """A PaddedConv2d with ``conv``'s configuration and parameters (shared, not copied).

        Args:
            conv: an ``nn.Conv2d`` with groups = 1, dilation = 1 and int / tuple padding.
            padding_mode: overrides ``conv.padding_mode`` (e.g. the mode of a preceding pad
                layer); ``"circular"`` is not supported.
            extra_padding: ``(ph, pw)`` added to ``conv.padding`` (a preceding pad layer's).
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"PaddedConv2d.from_conv: conv must be an nn.Conv2d, got "
                            f"{type(conv).__name__}")
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1) or isinstance(conv.padding, str):
            raise ValueError(f"PaddedConv2d.from_conv: needs groups=1, dilation=1 and int "
                             f"padding, got groups={conv.groups}, dilation={conv.dilation}, "
                             f"padding={conv.padding!r}")
        mode = conv.padding_mode if padding_mode is None else padding_mode
        padding = (conv.padding[0] + extra_padding[0], conv.padding[1] + extra_padding[1])
        p = conv.weight
        fused = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding,
                    mode, bias=conv.bias is not None, device=p.device, dtype=p.dtype)
        # Share the parameters so optimisers / hooks holding them keep working.
        fused.weight = conv.weight
        fused.bias = conv.bias
        fused.train(conv.training)
        return fused

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 3:
            return self.forward(input.unsqueeze(0)).squeeze(0)
        return _ops.padded_conv2d(input, self.weight, self.bias, self.stride, self.padding,
                                  self.padding_mode, getattr(self, "activation", None),
                                  getattr(self, "upsample", 1))


# --------------------------------------------------------------------------------------------
# sf.fuse pass


_PAD_LAYERS = {nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate"}


def _convertible(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.groups == 1 and tuple(conv.dilation) == (1, 1)
            and not isinstance(conv.padding, str) and conv.padding_mode in PADDING_MODE_NAMES)


def _symmetric_pad(pad: nn.Module) -> tuple[str, tuple[int, int]] | None:
    """(mode, (ph, pw)) of a ReflectionPad2d / ReplicationPad2d with equal left/right and
    top/bottom padding, else None."""
    mode = _PAD_LAYERS.get(type(pad))
    if mode is None:
        return None
    left, right, top, bottom = pad.padding
    if left != right or top != bottom:
        return None
    return mode, (top, left)


def _fusable_pair(pad: nn.Module, conv: nn.Module) -> tuple[str, tuple[int, int]] | None:
    spec = _symmetric_pad(pad)
    if spec is None or not _convertible(conv) or tuple(conv.padding) != (0, 0):
        return None
    return spec


def _pad_feeds_conv_only(module: nn.Module) -> bool:
    """True when ``module.forward`` uses ``reflection_pad`` exactly once, and only to feed
    ``conv2d`` (which it calls exactly once): the PyTorch examples' ConvLayer /
    UpsampleConvLayer. Checked on the torch.fx graph; untraceable modules are left alone."""
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:
        return False
    pads = [n for n in graph.nodes if n.op == "call_module" and n.target == "reflection_pad"]
    convs = [n for n in graph.nodes if n.op == "call_module" and n.target == "conv2d"]
    if len(pads) != 1 or len(convs) != 1:
        return False
    pad, conv = pads[0], convs[0]
    return (list(pad.users) == [conv] and len(conv.args) == 1 and conv.args[0] is pad
            and not conv.kwargs)


def _is_nearest_interpolate(node: torch.fx.Node, source, scale: int) -> bool:
    """``node`` is ``F.interpolate(source, scale_factor=scale, mode="nearest")`` with nothing
    else set (the examples' call)."""
    if node.op != "call_function" or node.target is not torch.nn.functional.interpolate:
        return False
    args = dict(zip(("input", "size", "scale_factor", "mode", "align_corners",
                     "recompute_scale_factor", "antialias"), node.args))
    args.update(node.kwargs)
    rest = {k: v for k, v in args.items() if k not in ("input", "scale_factor", "mode")}
    return (args.get("input") is source and args.get("mode") == "nearest"
            and args.get("scale_factor") in (scale, float(scale))
            and all(v in (None, False) for v in rest.values()))


def _foldable_upsample(module: nn.Module) -> int | None:
    """The factor ``s`` when ``module.forward`` is ``conv2d(reflection_pad(F.interpolate(x,
    mode="nearest", scale_factor=s)))`` with ``s = module.upsample`` an int >= 2, and setting
    ``module.upsample = None`` leaves ``conv2d(reflection_pad(x))`` (the PyTorch examples'
    UpsampleConvLayer); else None. Both forms are checked on the torch.fx graph."""
    scale = getattr(module, "upsample", None)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        return None

    def pad_input(expect_interpolate: bool):
        graph = torch.fx.symbolic_trace(module).graph
        inputs = [n for n in graph.nodes if n.op == "placeholder"]
        pads = [n for n in graph.nodes if n.op == "call_module" and n.target == "reflection_pad"]
        if len(inputs) != 1 or len(pads) != 1 or len(pads[0].args) != 1:
            return False
        src = pads[0].args[0]
        if not expect_interpolate:
            return src is inputs[0]
        return (isinstance(src, torch.fx.Node) and list(src.users) == [pads[0]]
                and _is_nearest_interpolate(src, inputs[0], scale))

    try:
        if not pad_input(True):
            return None
        module.upsample = None
        try:
            return scale if pad_input(False) else None
        finally:
            module.upsample = scale
    except Exception:
        return None


@register_pass
def fuse_padded_conv(model: nn.Module) -> None:
    """Rewrite padding + convolution into PaddedConv2d, in place, outputs unchanged:

    * inside nn.Sequential, a symmetric nn.ReflectionPad2d / nn.ReplicationPad2d directly followed
      by an nn.Conv2d with zero padding -> nn.Identity + PaddedConv2d carrying the pad (indices
      and state_dict keys stay);
    * a module with children ``reflection_pad`` (such a pad) and ``conv2d`` whose forward is
      ``conv2d(reflection_pad(x))`` (the PyTorch examples' ConvLayer) -> the same rewrite of
      those two attributes; when it is ``conv2d(reflection_pad(F.interpolate(x,
      mode="nearest", scale_factor=self.upsample)))`` (the examples' UpsampleConvLayer), the
      upsampling is folded too: ``conv2d`` becomes ``PaddedConv2d(upsample=s)`` and the layer's
      ``upsample`` attribute None, so that its forward no longer interpolates;
    * any remaining nn.Conv2d with padding_mode zeros / reflect / replicate, groups = 1,
      dilation = 1 and int padding -> PaddedConv2d.
    """
    for parent in list(model.modules()):
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for first, second in zip(names, names[1:]):
                pad, conv = parent._modules[first], parent._modules[second]
                spec = _fusable_pair(pad, conv)
                if spec is not None:
                    parent._modules[first] = nn.Identity()
                    parent._modules[second] = PaddedConv2d.from_conv(conv, spec[0], spec[1])
        elif set(parent._modules) >= {"reflection_pad", "conv2d"}:
            pad, conv = parent._modules["reflection_pad"], parent._modules["conv2d"]
            spec = _fusable_pair(pad, conv)
            if spec is not None and _pad_feeds_conv_only(parent):
                scale = _foldable_upsample(parent)
                parent._modules["reflection_pad"] = nn.Identity()
                parent._modules["conv2d"] = PaddedConv2d.from_conv(conv, spec[0], spec[1])
                if scale is not None:
                    parent._modules["conv2d"].upsample = scale
                    parent.upsample = None
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if _convertible(child):
                parent._modules[name] = PaddedConv2d.from_conv(child)
