"""AdaINNet: arbitrary-style transfer in one forward pass (Huang & Belongie 2017, *Arbitrary Style
Transfer in Real-time with Adaptive Instance Normalization*, arXiv:1703.06868).

A frozen VGG-19 encoder ``f`` (up to relu4_1), adaptive instance normalisation of the content
features to the style features' per-channel mean and standard deviation, and a trained decoder
``g`` mirroring the encoder: ``g(alpha * AdaIN(f(c), f(s)) + (1 - alpha) * f(c))``.

``norm="fused"`` runs the package's kernels: the encoder's convolutions on
:func:`~stylize_fast.functional.padded_conv2d`, AdaIN as one fused instance norm with per-sample
affine parameters (:func:`~stylize_fast.functional.adain_with_stats`), the decoder's reflection
padding, nearest upsampling and ReLU inside :class:`~stylize_fast.nn.PaddedConv2d`.
``norm="instance"`` is the plain-PyTorch twin (``nn.Conv2d`` / ``nn.ReflectionPad2d`` /
``F.interpolate`` / ReLU, AdaIN from mean and variance ops): same ``state_dict`` keys, same
outputs, exportable to ONNX.

The encoder's weights are part of the ``state_dict`` (``encoder.features.N.*``), so a saved model
rebuilds without the VGG file: :attr:`AdaINNet.options` records ``vgg_weights="state_dict"``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence

import torch
from torch import nn

from .. import functional as sff
from ..training.vgg import RANDOM, VGGFeatures, WeightSource, build_vgg
from .layers import (
    ConvLayer,
    UpsampleConvLayer,
    check_channels_last,
    check_choice,
    generator_layouts,
)

NORMS = ("instance", "fused")
ENCODER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu4_1"  # torchvision vgg19 features index 20
FEATURES = 512  # channels of relu4_1
# vgg_weights value meaning "the encoder's weights come with the state_dict loaded next"
FROM_STATE_DICT = "state_dict"
# The decoder's last convolution predicts RGB in [0, 1] (Huang's decoder, whose trained weights
# port as they are); the model speaks 0-255 like the package's generators.
OUTPUT_SCALE = 255.0

# (in, out, nearest upsampling before the conv, ReLU after): Huang's decoder, the encoder mirrored.
DECODER_PLAN: tuple[tuple[int, int, int, bool], ...] = (
    (512, 256, 1, True),
    (256, 256, 2, True), (256, 256, 1, True), (256, 256, 1, True), (256, 128, 1, True),
    (128, 128, 2, True), (128, 64, 1, True),
    (64, 64, 2, True), (64, 3, 1, False),
)


def _random_label() -> str:
    return WeightSource(RANDOM).label


def check_alpha(fn: str, alpha) -> float:
    """``alpha`` as a float in [0, 1], or a ValueError naming it. A one-element tensor is read
    as its value (``torch.onnx.export`` passes the default ``alpha`` as one: it becomes a
    constant of the exported graph)."""
    if isinstance(alpha, torch.Tensor) and alpha.numel() == 1 and alpha.is_floating_point():
        alpha = float(alpha)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) \
            or not math.isfinite(float(alpha)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"{fn}: alpha (style strength) must be a number in [0, 1], "
                         f"got {alpha!r}")
    return float(alpha)


def _check_images(fn: str, name: str, images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        hint = " (for one image use .unsqueeze(0))" if images.dim() == 3 else ""
        raise ValueError(f"{fn}: {name} must be an RGB batch (N, 3, H, W), got shape "
                         f"{tuple(images.shape)}{hint}")
    if not images.is_floating_point():
        raise ValueError(f"{fn}: {name} must be a floating-point tensor (RGB 0-255), got "
                         f"{images.dtype}")


class AdaINDecoder(nn.Module):
    """Huang's decoder: ``(N, 512, h, w)`` relu4_1-like features -> ``(N, 3, 8h, 8w)`` RGB 0-255.

    Nine reflection-padded 3x3 convolutions (:data:`DECODER_PLAN`), three preceded by a nearest
    x2 upsampling. Fused: each is one ``PaddedConv2d`` holding the padding, the upsampling and
    the ReLU; plain: ``F.interpolate`` + ``nn.ReflectionPad2d`` + ``nn.Conv2d`` + ReLU. Keys in
    both: ``layers.K.conv2d.weight`` / ``.bias``."""

    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        layers: list[nn.Module] = []
        for cin, cout, up, relu in DECODER_PLAN:
            layer = (UpsampleConvLayer(cin, cout, 3, up, "nearest", "reflect", fused) if up > 1
                     else ConvLayer(cin, cout, 3, 1, "reflect", fused))
            if fused and relu:
                layer.conv2d.activation = "relu"  # in the convolution's output store
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        self.relu_after = [relu for *_, relu in DECODER_PLAN]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, relu in zip(self.layers, self.relu_after):
            x = layer(x)
            if relu and not self.fused:
                x = torch.relu(x)
        return x * OUTPUT_SCALE


class AdaINNet(nn.Module):
    """Arbitrary-style transfer network (Huang & Belongie 2017); RGB 0-255 in and out.

    Args:
        norm: ``"fused"`` (package kernels) or ``"instance"`` (plain PyTorch: the export twin;
            its encoder runs ``kernels="eager"``). Both have the same ``state_dict``.
        vgg_weights: the VGG-19 encoder's weights, as for
            :func:`~stylize_fast.training.vgg.build_vgg`: None (torch hub cache, else download),
            a torchvision ``vgg19`` state dict file, or ``"random"`` (untrained; tests only).
            ``"state_dict"``: build the encoder untrained because its weights come with the
            ``state_dict`` loaded next -- what :func:`stylize_fast.models.load` does with the
            recorded :attr:`options`, so that loading a model never needs the VGG file.
        eps: added to the variances in AdaIN (``sigma = sqrt(var + eps)``).
        channels_last: compute the decoder in channels_last (input and output keep their own
            layout). None: yes for ``norm="fused"`` on CPU. A runtime choice, not recorded.
        encoder_label: with ``vgg_weights="state_dict"``, where the encoder's weights originally
            came from (recorded in :attr:`options`; shown by ``repr``).

    Shapes: content ``(N, 3, H, W)``, style ``(1 or N, 3, H', W')`` -> ``(N, 3, H, W)`` when H and
    W are multiples of :attr:`multiple` (8); otherwise pad first (the inference engine does).
    Outputs are not clamped.
    """

    #: Height and width must be multiples of this for the output to keep the input's size.
    multiple = 8

    def __init__(self, norm: str = "fused", *, vgg_weights: str | os.PathLike | None = None,
                 eps: float = 1e-5, channels_last: bool | None = None,
                 encoder_label: str | None = None) -> None:
        super().__init__()
        fn = type(self).__name__
        check_choice(fn, "norm", norm, NORMS)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0 \
                or not math.isfinite(eps):
            raise ValueError(f"{fn}: eps must be a positive number, got {eps!r}")
        check_channels_last(fn, channels_last)
        kernels = "package" if norm == "fused" else "eager"
        if vgg_weights is not None and str(vgg_weights) == FROM_STATE_DICT:
            if encoder_label is not None and not isinstance(encoder_label, str):
                raise ValueError(f"{fn}: encoder_label must be a string or None, "
                                 f"got {encoder_label!r}")
            self.encoder = VGGFeatures("vgg19", ENCODER_LAYERS, kernels=kernels)
            self.encoder_label = encoder_label or "unknown"
            # Weights loaded from a model file: say so, and where they first came from (a
            # random encoder stays marked random).
            self.encoder.source = (WeightSource(RANDOM) if self.encoder_label == _random_label()
                                   else WeightSource(FROM_STATE_DICT, self.encoder_label))
        else:
            if encoder_label is not None:
                raise ValueError(f"{fn}: encoder_label is only for vgg_weights='state_dict' "
                                 f"(rebuilding a saved model); got vgg_weights={vgg_weights!r}")
            self.encoder = build_vgg("vgg19", ENCODER_LAYERS, vgg_weights, kernels=kernels)
            self.encoder_label = self.encoder.source.label
        self.decoder = AdaINDecoder(fused=norm == "fused")
        self.norm = norm
        self.eps = float(eps)
        self.channels_last = channels_last
        # What rebuilds this architecture with these weights (models.save / models.load).
        self.options = dict(norm=norm, eps=self.eps, vgg_weights=FROM_STATE_DICT,
                            encoder_label=self.encoder_label)

    # -- modes and conversion ------------------------------------------------------------------

    def train(self, mode: bool = True) -> AdaINNet:
        super().train(mode)
        self.encoder.eval()  # the encoder is frozen and never leaves eval mode
        return self

    def to_plain(self) -> AdaINNet:
        """A ``norm="instance"`` copy (plain PyTorch, eager encoder) with the same weights and
        outputs, on this model's device and dtype: what ONNX export uses."""
        plain = AdaINNet("instance", vgg_weights=FROM_STATE_DICT, eps=self.eps,
                         channels_last=self.channels_last, encoder_label=self.encoder_label)
        p = next(self.decoder.parameters())
        # Convert before loading: loading a float64 state into float32 parameters would round.
        plain = plain.to(device=p.device, dtype=p.dtype)
        plain.load_state_dict(self.state_dict())
        return plain.train(self.training)

    # -- pieces --------------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """relu4_1 features ``(N, 512, H/8, W/8)`` of ``images`` ``(N, 3, H, W)`` RGB 0-255."""
        _check_images(f"{type(self).__name__}.encode", "images", images)
        return self.encoder(images, layers=(CONTENT_LAYER,))[CONTENT_LAYER]

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """The decoder on ``(N, 512, h, w)`` features -> ``(N, 3, 8h, 8w)`` RGB 0-255 (not
        clamped), computed in the decoder's layout (see ``channels_last``)."""
        if not isinstance(features, torch.Tensor) or features.dim() != 4 \
                or features.shape[1] != FEATURES:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else features
            raise ValueError(f"{type(self).__name__}.decode: features must be (N, {FEATURES}, "
                             f"h, w), got {shape}")
        compute_format, _ = generator_layouts(features, self.channels_last, self.norm)
        return self.decoder(features.contiguous(memory_format=compute_format))

    def feature_stats(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)``, each ``(N, C)`` float32 (float64), of ``features``: the AdaIN
        statistics (:func:`stylize_fast.functional.mean_std` with this model's ``eps``)."""
        return sff.mean_std(features, self.eps)

    def adain(self, features: torch.Tensor, mean: torch.Tensor,
              std: torch.Tensor) -> torch.Tensor:
        """``std * normalised(features) + mean`` with ``mean``, ``std`` ``(1 or N, C)``: the fused
        kernel (``norm="fused"``) or plain tensor ops (``norm="instance"``, exportable)."""
        fn = f"{type(self).__name__}.adain"
        n, c = features.shape[:2]
        for name, t in (("mean", mean), ("std", std)):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != c \
                    or t.shape[0] not in (1, n):
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else t
                raise ValueError(f"{fn}: style {name} must have shape (1, {c}) or ({n}, {c}), "
                                 f"got {shape}")
        if self.norm == "fused":
            return sff.adain_with_stats(features, mean, std, self.eps)
        own_mean, own_std = self.feature_stats(features)
        x = features.to(own_mean.dtype)
        normalised = (x - own_mean[:, :, None, None]) / own_std[:, :, None, None]
        out = normalised * std.to(x.dtype)[:, :, None, None] + mean.to(x.dtype)[:, :, None, None]
        return out.to(features.dtype)

    def _stylize_features(self, content: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                          alpha: float) -> torch.Tensor:
        _, out_format = generator_layouts(content, self.channels_last, self.norm)
        features = self.encode(content)
        target = self.adain(features, mean, std)
        if alpha != 1.0:
            target = alpha * target + (1.0 - alpha) * features
        return self.decode(target).contiguous(memory_format=out_format)

    # -- the model -----------------------------------------------------------------------------

    def forward(self, content: torch.Tensor, style: torch.Tensor,
                alpha: float = 1.0) -> torch.Tensor:
        """Stylise ``content`` ``(N, 3, H, W)`` with ``style`` ``(1, 3, H', W')`` (one style for
        all) or ``(N, 3, H', W')`` (one each), RGB 0-255. ``alpha`` in [0, 1]: the decoder sees
        ``alpha * AdaIN(f(c), f(s)) + (1 - alpha) * f(c)``. Returns ``(N, 3, H, W)`` 0-255 in
        the content's memory format (H, W multiples of 8)."""
        fn = f"{type(self).__name__}.forward"
        _check_images(fn, "content", content)
        _check_images(fn, "style", style)
        if style.shape[0] not in (1, content.shape[0]):
            raise ValueError(f"{fn}: style must have batch 1 or the content's batch "
                             f"{content.shape[0]}, got {style.shape[0]}")
        alpha = check_alpha(fn, alpha)
        mean, std = self.feature_stats(self.encode(style))
        return self._stylize_features(content, mean, std, alpha)

    def stylize_with_stats(self, content: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                           alpha: float = 1.0) -> torch.Tensor:
        """As :meth:`forward` with precomputed style statistics ``mean``, ``std`` ``(1 or N,
        512)`` (from :meth:`style_stats`): what the inference engine calls per batch."""
        fn = f"{type(self).__name__}.stylize_with_stats"
        _check_images(fn, "content", content)
        alpha = check_alpha(fn, alpha)
        return self._stylize_features(content, mean, std, alpha)

    def style_stats(self, style_images: torch.Tensor | Sequence[torch.Tensor],
                    weights: Sequence[float] | torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed relu4_1 statistics of one or several style images.

        Args:
            style_images: a ``(3, H, W)`` image, a ``(K, 3, H, W)`` batch, or a list of such
                tensors (sizes may differ), RGB 0-255.
            weights: one non-negative mixing weight per image (not all zero; normalised to sum
                1); None: equal weights.

        Returns:
            ``(mean, std)``, each ``(1, 512)`` float32 (float64): ``sum_k w_k mean_k`` and
            ``sum_k w_k std_k``.
        """
        fn = f"{type(self).__name__}.style_stats"
        items = [style_images] if isinstance(style_images, torch.Tensor) else list(style_images)
        if not items:
            raise ValueError(f"{fn}: style_images is empty; give at least one image")
        means, stds = [], []
        for i, image in enumerate(items):
            if isinstance(image, torch.Tensor) and image.dim() == 3:
                image = image.unsqueeze(0)
            _check_images(fn, f"style_images[{i}]" if len(items) > 1 else "style_images", image)
            mean, std = self.feature_stats(self.encode(image))
            means.append(mean)
            stds.append(std)
        means, stds = torch.cat(means), torch.cat(stds)
        w = self._mixing_weights(fn, weights, means.shape[0], means)
        # AdaIN(x; m, s) = s * normalised(x) + m is affine in (m, s): with sum_k w_k = 1,
        # AdaIN(x; sum_k w_k m_k, sum_k w_k s_k) = sum_k w_k AdaIN(x; m_k, s_k), exactly Huang's
        # interpolation of several styles' AdaIN outputs -- one AdaIN, one decoder pass.
        return (w @ means).unsqueeze(0), (w @ stds).unsqueeze(0)

    @staticmethod
    def _mixing_weights(fn: str, weights, count: int, like: torch.Tensor) -> torch.Tensor:
        if weights is None:
            return torch.full((count,), 1.0 / count, dtype=like.dtype, device=like.device)
        try:
            w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().reshape(-1)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{fn}: weights must be a sequence of numbers, got "
                             f"{weights!r}") from exc
        if w.numel() != count:
            raise ValueError(f"{fn}: weights has {w.numel()} entries but there are {count} style "
                             f"images; give one weight per image")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError(f"{fn}: weights must be finite and non-negative, got "
                             f"{w.tolist()}")
        if not float(w.sum()) > 0:
            raise ValueError(f"{fn}: weights are all zero; at least one must be positive")
        return (w / w.sum()).to(dtype=like.dtype, device=like.device)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, eps={self.eps!r}, encoder_weights={self.encoder_label!r}"
