"""Perceptual losses: content (feature MSE), style (Gram MSE), total variation, with presets.

Presets follow the published setups; every value can be overridden:

- ``examples``: PyTorch examples' fast_neural_style — VGG-16, content relu2_2, style
  relu1_2/relu2_2/relu3_3/relu4_3, content weight 1e5, style weight 1e10, no TV.
- ``johnson``: Johnson et al. 2016 (fast-neural-style defaults) — VGG-16, content relu3_3
  (weight 1), style relu1_2/relu2_2/relu3_3/relu4_3 with weight 5.0 per layer, TV 1e-6.
- ``ulyanov``: Ulyanov et al. 2016 (texture_nets) — VGG-19, content relu4_2, style
  relu1_1/relu2_1/relu3_1/relu4_1. Their weights were tuned for Caffe-style (0-255, BGR)
  features; here features are ImageNet-normalised like ``examples``, so the ``examples``
  weights (1e5 / 1e10) are used as the default balance.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..ops import gram as _gram_op
from ..ops import mse as _mse_op
from .vgg import VGGFeatures, build_vgg


@dataclass
class LossConfig:
    """Layer sets and weights of the perceptual loss. ``style_layer_weights`` (one per style
    layer, default 1) multiply ``style_weight``."""

    vgg: str = "vgg16"
    content_layers: list[str] = field(default_factory=lambda: ["relu2_2"])
    style_layers: list[str] = field(
        default_factory=lambda: ["relu1_2", "relu2_2", "relu3_3", "relu4_3"])
    content_weight: float = 1e5
    style_weight: float = 1e10
    style_layer_weights: list[float] | None = None
    tv_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.vgg not in ("vgg16", "vgg19"):
            raise ValueError(f"loss network must be 'vgg16' or 'vgg19', got {self.vgg!r}")
        for name in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if not self.content_layers and not self.style_layers:
            raise ValueError("at least one content or style layer is needed")
        if self.style_layer_weights is not None and \
                len(self.style_layer_weights) != len(self.style_layers):
            raise ValueError(f"style_layer_weights has {len(self.style_layer_weights)} entries "
                             f"for {len(self.style_layers)} style layers")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict] = {
    "examples": dict(vgg="vgg16", content_layers=["relu2_2"],
                     style_layers=["relu1_2", "relu2_2", "relu3_3", "relu4_3"],
                     content_weight=1e5, style_weight=1e10, tv_weight=0.0),
    "johnson": dict(vgg="vgg16", content_layers=["relu3_3"],
                    style_layers=["relu1_2", "relu2_2", "relu3_3", "relu4_3"],
                    content_weight=1.0, style_weight=5.0, tv_weight=1e-6),
    "ulyanov": dict(vgg="vgg19", content_layers=["relu4_2"],
                    style_layers=["relu1_1", "relu2_1", "relu3_1", "relu4_1"],
                    content_weight=1e5, style_weight=1e10, tv_weight=0.0),
}


def loss_config(preset: str = "examples", **overrides) -> LossConfig:
    """The preset's :class:`LossConfig` with ``overrides`` (None values ignored) applied."""
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return LossConfig(**values)


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    # Losses accumulate in float32 (also under bfloat16/float16 autocast), float64 stays float64.
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class _Gram(torch.autograd.Function):
    """``G = scale * F F^T`` of ``F`` ``(N, C, M)``, one batched GEMM each way. Autograd of the plain
    ``bmm(f, f.transpose(1, 2))`` runs two GEMMs and an add in the backward (one per operand);
    G is symmetric, so ``dF = scale (dG + dG^T) F`` is one. The gradient comes back in F's own
    layout (channels_last features give a channels_last gradient: no copy in the conv below)."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(f)
        ctx.scale = scale
        # In place: the saved input is F, not the output; saves a (N, C, C) buffer.
        return torch.bmm(f, f.transpose(1, 2)).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (f,) = ctx.saved_tensors
        sym = grad + grad.transpose(1, 2)
        if f.stride(1) == 1 and f.stride(2) != 1:  # (N, C, M) view of an (N, M, C) matrix
            grad_f = torch.bmm(f.transpose(1, 2), sym).mul_(ctx.scale).transpose(1, 2)
        else:
            grad_f = torch.bmm(sym, f).mul_(ctx.scale)
        return grad_f, None


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W) -> (N, C, C)``: ``F F^T / (C H W)``, one batched GEMM in float32 (or
    float64), also under autocast; its backward is one batched GEMM too (:class:`_Gram`).

    Contiguous and channels_last features both reshape to ``(N, C, H*W)`` as a view (channels_last
    gives the transposed matrix, which the GEMM reads as such): no copy beyond the float32 cast of
    half-precision features. Channels-last bfloat16 features on CPU (the loss network under
    bfloat16 autocast) skip that cast too: the compiled kernel (``stylize_fast.ops.gram``) sums
    their exact products in float32, forward and backward."""
    if features.dim() != 4:
        raise ValueError(f"gram_matrix: features must be (N, C, H, W), got {tuple(features.shape)}")
    n, c, h, w = features.shape
    if _gram_op.supported(features):
        with torch.autocast(features.device.type, enabled=False):
            return _gram_op.gram(features, 1.0 / (c * h * w))
    f = features.to(_acc_dtype(features)).reshape(n, c, h * w)
    with torch.autocast(f.device.type, enabled=False):  # autocast would run bmm in bfloat16
        return _Gram.apply(f, 1.0 / (c * h * w))


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between feature maps (same shape), as a float32 (float64) scalar.
    bfloat16 feature maps of one layout on CPU (the loss network under bfloat16 autocast) are
    read as they are by the compiled kernel (``stylize_fast.ops.mse``), without float32 copies."""
    if _mse_op.supported(features, target):
        return _mse_op.mse(features, target)
    dtype = _acc_dtype(features)
    return nn.functional.mse_loss(features.to(dtype), target.to(dtype))


def style_loss(grams: Mapping[str, torch.Tensor], target_grams: Mapping[str, torch.Tensor],
               layer_weights: Mapping[str, float] | None = None,
               style_index: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_l w_l * mean((G_l - T_l)^2)``. Targets ``(S, C, C)``, one per style: with
    ``style_index`` ``(N,)`` sample i is compared with target ``style_index[i]``; without it the
    targets (``S = 1``) broadcast over the batch."""
    total = None
    for name, g in grams.items():
        t = target_grams[name].to(g.dtype)
        if style_index is not None:
            t = t.index_select(0, style_index.to(t.device))
        t = t.expand_as(g)
        weight = 1.0 if layer_weights is None else layer_weights[name]
        term = nn.functional.mse_loss(g, t) * weight
        total = term if total is None else total + term
    if total is None:
        raise ValueError("style_loss: no style layers")
    return total


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Squared total variation ``sum (x[i+1,j]-x[i,j])^2 + (x[i,j+1]-x[i,j])^2`` per image,
    averaged over the batch. ``images``: ``(N, C, H, W)``."""
    x = images.to(_acc_dtype(images))
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).sum()
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).sum()
    return (dx + dy) / x.shape[0]


class PerceptualLoss(nn.Module):
    """Content + style + TV loss of a generator output against its content input.

    ``forward(output, content)``: both ``(N, 3, H, W)`` RGB in [0, 255]; returns a dict of
    float32 scalars ``content``, ``style``, ``tv`` (weighted) and ``total``. The no-grad pass over
    ``content`` runs the loss network only to the deepest content layer; the pass over
    ``output`` to the deepest of all layers. ``kernels`` chooses the loss network's kernels when
    it is built here (see :class:`VGGFeatures`).
    """

    def __init__(self, config: LossConfig, vgg: VGGFeatures | None = None,
                 vgg_weights: str | os.PathLike | None = None, init_seed: int = 0,
                 kernels: str = "package") -> None:
        super().__init__()
        self.config = config
        layers = list(dict.fromkeys([*config.content_layers, *config.style_layers]))
        self.layers = layers
        if vgg is None:
            vgg = build_vgg(config.vgg, layers, vgg_weights, init_seed=init_seed, kernels=kernels)
        elif vgg.arch != config.vgg or any(name not in vgg.layers for name in layers):
            raise ValueError(f"the given loss network ({vgg.arch}, {vgg.layers}) does not provide "
                             f"{config.vgg} layers {layers}")
        self.vgg = vgg
        weights = config.style_layer_weights or [1.0] * len(config.style_layers)
        self.style_layer_weights = dict(zip(config.style_layers, weights))
        self.target_grams: dict[str, torch.Tensor] = {}
        self.num_styles = 1

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.vgg.eval()  # the loss network never leaves eval mode
        return self

    @torch.no_grad()
    def set_style(self, style: torch.Tensor | Sequence[torch.Tensor]) -> None:
        """Compute target Grams from ``style`` ``(1, 3, H, W)``, or from a list of style images
        (each ``(1, 3, H_k, W_k)``, sizes may differ) for a multi-style model: targets
        ``(S, C, C)``, computed once here, in the network's dtype, outside autocast."""
        styles = [style] if isinstance(style, torch.Tensor) else list(style)
        if not styles:
            raise ValueError("set_style: no style image")
        for s in styles:
            if not isinstance(s, torch.Tensor) or s.dim() != 4 or s.shape[:2] != (1, 3):
                raise ValueError(f"style image must be (1, 3, H, W), got "
                                 f"{tuple(s.shape) if isinstance(s, torch.Tensor) else s!r}")
        self.num_styles = len(styles)
        if not self.config.style_layers:
            self.target_grams = {}
            return
        dtype = self.vgg.features[0].weight.dtype
        per_style = [self.vgg(s.to(dtype), layers=self.config.style_layers) for s in styles]
        self.target_grams = {k: torch.cat([gram_matrix(f[k]) for f in per_style])
                             for k in self.config.style_layers}

    def forward(self, output: torch.Tensor, content: torch.Tensor,
                style_index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``style_index`` ``(N,)``: the style each sample of a multi-style batch is judged by
        (needed when :meth:`set_style` was given several images)."""
        cfg = self.config
        if style_index is None and self.num_styles > 1:
            raise ValueError(f"PerceptualLoss: {self.num_styles} style targets are set; pass "
                             f"style_index (N,) to say which one each sample is judged by")
        if self.config.style_layers and not self.target_grams:
            raise RuntimeError("PerceptualLoss: call set_style(style_image) before computing "
                               "the loss")
        with torch.no_grad():
            target = self.vgg(content, layers=cfg.content_layers) if cfg.content_layers else {}
        feats = self.vgg(output, layers=self.layers)
        zero = output.new_zeros((), dtype=_acc_dtype(output))
        c = sum((content_loss(feats[k], target[k]) for k in cfg.content_layers), zero)
        if cfg.style_layers:
            grams = {k: gram_matrix(feats[k]) for k in cfg.style_layers}
            s = style_loss(grams, self.target_grams, self.style_layer_weights, style_index)
        else:
            s = zero
        tv = total_variation(output) if cfg.tv_weight > 0 else zero
        terms = {"content": cfg.content_weight * c, "style": cfg.style_weight * s,
                 "tv": cfg.tv_weight * tv}
        terms["total"] = terms["content"] + terms["style"] + terms["tv"]
        return terms


def parse_layers(text: str | Sequence[str] | None) -> list[str] | None:
    """``"relu1_2,relu2_2"`` -> ``["relu1_2", "relu2_2"]``; None stays None."""
    if text is None or not isinstance(text, str):
        return None if text is None else list(text)
    return [t.strip() for t in text.split(",") if t.strip()]
