"""Conditional instance normalisation (Dumoulin et al., "A Learned Representation for Artistic
Style"): one (gamma, beta) row per style, chosen per sample.

A style selection is either an integer index per sample ``(B,)`` or mixing weights over the
styles per sample ``(B, S)`` (blends of the rows, as magenta's ``weighted_instance_norm``).
Either way each layer turns it into a per-sample affine ``(B, C)`` and runs one instance-norm
call for the whole batch, whatever mix of styles it holds: the fused kernels take per-sample
weight and bias natively.

:func:`select_styles` checks a selection once (shape, dtype, range: one host sync for an index
tensor) and wraps it in a :class:`StyleSelection`, which the layers then take without checking
again; generators call it once per forward, not once per layer.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import instance_norm as _ops
from ..ops.common import Activation, activation_code


class StyleSelection(NamedTuple):
    """A checked style selection for a batch: exactly one of ``index`` (int64 ``(B,)``) and
    ``weights`` (floating ``(B, S)``, rows summing to 1) is set."""

    index: torch.Tensor | None
    weights: torch.Tensor | None

    @property
    def batch(self) -> int:
        return int((self.index if self.index is not None else self.weights).shape[0])


def select_styles(style, num_styles: int, batch: int | None = None,
                  fn: str = "style") -> StyleSelection:
    """Check ``style`` against a model with ``num_styles`` styles and a batch of ``batch``.

    ``style``: a :class:`StyleSelection` (returned as is); an integer tensor ``(B,)`` of style
    indices in ``[0, num_styles)``; a floating tensor ``(B, num_styles)`` of mixing weights
    (non-negative, finite, each row with a positive sum; rows are normalised to sum to 1, so
    ``[1, 3]`` means a quarter of style 0 and three quarters of style 1); a Python int (one style
    for every sample); or a list of ``num_styles`` numbers (one mix for every sample). A single
    index / weight row broadcasts to ``batch``.
    """
    if isinstance(style, StyleSelection):
        if batch is None or style.batch == batch:
            return style
        if style.batch != 1:
            raise ValueError(f"{fn}: a selection of {style.batch} styles for a batch of {batch}")
        if style.index is not None:
            return StyleSelection(style.index.expand(batch), None)
        return StyleSelection(None, style.weights.expand(batch, style.weights.shape[1]))
    if isinstance(style, bool):
        raise TypeError(f"{fn}: expected a style index or mixing weights, got a bool")
    if isinstance(style, int):
        style = torch.tensor([style])
    elif isinstance(style, (list, tuple)):
        if len(style) != num_styles or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in style):
            raise ValueError(f"{fn}: mixing weights must be {num_styles} numbers (one per style), "
                             f"got {list(style)!r}")
        style = torch.tensor([[float(v) for v in style]], dtype=torch.float64)
    if not isinstance(style, torch.Tensor):
        raise TypeError(f"{fn}: expected an integer tensor (B,) of style indices or a float "
                        f"tensor (B, {num_styles}) of mixing weights, got {type(style).__name__}")
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    if style.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        if style.dim() == 0:
            style = style.reshape(1)
        if style.dim() != 1:
            raise ValueError(f"{fn}: style indices must have shape (B,), got {tuple(style.shape)}")
        if not tracing and style.numel() and (
                bool((style < 0).any()) or bool((style >= num_styles).any())):
            bad = style[(style < 0) | (style >= num_styles)][0].item()
            raise ValueError(f"{fn}: style index {bad} out of range: this model has "
                             f"{num_styles} styles (0..{num_styles - 1})")
        index = style.long()
        if batch is not None and index.shape[0] != batch:
            if index.shape[0] != 1:
                raise ValueError(f"{fn}: {index.shape[0]} style indices for a batch of {batch}")
            index = index.expand(batch)
        return StyleSelection(index, None)
    if not style.is_floating_point():
        raise TypeError(f"{fn}: style must be an integer (indices) or floating (mixing weights) "
                        f"tensor, got {style.dtype}")
    if style.dim() == 1:
        style = style.unsqueeze(0)
    if style.dim() != 2 or style.shape[1] != num_styles:
        raise ValueError(f"{fn}: mixing weights must have shape (B, {num_styles}) (one weight per "
                         f"style), got {tuple(style.shape)}")
    if not tracing:
        if not bool(torch.isfinite(style).all()) or bool((style < 0).any()):
            raise ValueError(f"{fn}: mixing weights must be finite and non-negative")
        if bool((style.sum(1) <= 0).any()):
            raise ValueError(f"{fn}: every row of mixing weights needs a positive sum (all zero "
                             f"selects no style)")
    weights = style / style.sum(1, keepdim=True)
    if batch is not None and weights.shape[0] != batch:
        if weights.shape[0] != 1:
            raise ValueError(f"{fn}: {weights.shape[0]} rows of mixing weights for a batch of "
                             f"{batch}")
        weights = weights.expand(batch, num_styles)
    return StyleSelection(None, weights)


def style_rows(table: torch.Tensor, selection: StyleSelection) -> torch.Tensor:
    """Per-sample rows ``(B, C)`` of a ``(S, C)`` parameter table: a gather for indices, a
    weighted sum for mixing weights (exact for one-hot weights: 1*w + 0*... = w)."""
    if selection.index is not None:
        return table.index_select(0, selection.index.to(table.device))
    weights = selection.weights.to(device=table.device, dtype=table.dtype)
    return (weights.unsqueeze(2) * table.unsqueeze(0)).sum(1)


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm with ``num_styles`` learned affine rows and a fused activation.

    Parameters ``weight`` and ``bias`` have shape ``(num_styles, num_features)`` (ones / zeros at
    start). ``forward(input, style)``: ``input`` ``(N, C, H, W)`` in any memory format; ``style``
    as :func:`select_styles` takes it. ``fused=True`` runs the package's kernel (one call, the
    activation inside); ``fused=False`` is plain PyTorch (``F.instance_norm`` then the
    per-sample affine), for export and as the baseline.
    """

    def __init__(self, num_features: int, num_styles: int, eps: float = 1e-5, *,
                 activation: str | None = None, negative_slope: float = 0.01,
                 fused: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        fn = type(self).__name__
        for name, value in (("num_features", num_features), ("num_styles", num_styles)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"{fn}: eps must be a non-negative number, got {eps!r}")
        code = activation_code(activation)
        self.num_features = num_features
        self.num_styles = num_styles
        self.eps = float(eps)
        self.activation = None if code == Activation.NONE else code.name.lower()
        self.negative_slope = float(negative_slope)
        self.fused = bool(fused)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(num_styles, num_features, **factory))
        self.bias = nn.Parameter(torch.zeros(num_styles, num_features, **factory))

    @classmethod
    def from_instance_norm(cls, module: nn.Module, num_styles: int,
                           activation: str | None = None, negative_slope: float = 0.01,
                           fused: bool = True) -> ConditionalInstanceNorm2d:
        """A conditional layer whose every style row is ``module``'s affine (an
        ``nn.InstanceNorm2d`` / ``FusedInstanceNorm2d`` with ``affine=True``)."""
        if not getattr(module, "affine", False) or getattr(module, "track_running_stats", False):
            raise ValueError("from_instance_norm: the module must be an affine instance norm "
                             "without running statistics")
        p = module.weight
        layer = cls(module.num_features, num_styles, module.eps, activation=activation,
                    negative_slope=negative_slope, fused=fused, device=p.device, dtype=p.dtype)
        with torch.no_grad():
            layer.weight.copy_(module.weight.detach().expand_as(layer.weight))
            if module.bias is not None:
                layer.bias.copy_(module.bias.detach().expand_as(layer.bias))
        return layer

    def affine(self, style, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample ``(weight, bias)``, each ``(B, C)``, for a style selection."""
        selection = select_styles(style, self.num_styles, batch, type(self).__name__)
        return style_rows(self.weight, selection), style_rows(self.bias, selection)

    def forward(self, input: torch.Tensor, style) -> torch.Tensor:
        fn = type(self).__name__
        if not isinstance(input, torch.Tensor) or input.dim() != 4:
            raise ValueError(f"{fn}: input must be (N, C, H, W), got "
                             f"{tuple(input.shape) if isinstance(input, torch.Tensor) else input!r}")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{fn}: expected {self.num_features} channels, got input of shape "
                             f"{tuple(input.shape)}")
        weight, bias = self.affine(style, input.shape[0])
        if self.fused:
            weight, bias, code = _ops.check_args(input, weight, bias, self.eps, self.activation,
                                                 self.negative_slope, fn=fn)
            return _ops.instance_norm_with_stats(input, weight, bias, self.eps, code,
                                                 self.negative_slope)[0]
        y = F.instance_norm(input, eps=self.eps)
        y = y * weight.to(y.dtype)[:, :, None, None] + bias.to(y.dtype)[:, :, None, None]
        if self.activation == "relu":
            y = F.relu(y)
        elif self.activation == "leaky_relu":
            y = F.leaky_relu(y, self.negative_slope)
        return y

    def extra_repr(self) -> str:
        text = f"{self.num_features}, num_styles={self.num_styles}, eps={self.eps}"
        if self.activation is not None:
            text += f", activation={self.activation!r}"
        if not self.fused:
            text += ", fused=False"
        return text
