"""VGG-16 / VGG-19 feature extractors used as the perceptual loss network.

Defined here (no torchvision dependency) with the same ``features.N`` module indices as
torchvision, so torchvision weight files (``vgg16-397923af.pth``, ``vgg19-dcbb9e9d.pth``) load
directly. Weights come from an explicit file, else the torch hub cache, else a download from the
official URL with the SHA-256 prefix in the file name checked. ``"random"`` gives an untrained
network for tests and offline smoke runs; it is labelled as such everywhere it is recorded.

The forward pass runs on the package's kernels by default (``kernels="package"``): every 3x3
convolution through :func:`stylize_fast.functional.padded_conv2d` (zero padding) in
channels_last with the ReLU right after it, max pools on the channels_last maps. ``"eager"``
runs the plain ``nn.Conv2d`` / ``nn.ReLU`` / ``nn.MaxPool2d`` modules in the input's layout (the
PyTorch examples' loss network: the reference of the equivalence tests and the benchmarks'
baseline). Both use the same ``features.N`` parameters.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import urllib.error
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import functional as sff

# Channel plan of torchvision's VGG "D" (16) and "E" (19) configurations; "M" is a 2x2 max pool.
_CONFIGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}

# The official torchvision weight files; the 8 hex digits in the name are the SHA-256 prefix.
WEIGHT_FILES: dict[str, tuple[str, str]] = {
    "vgg16": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "vgg19": ("vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"),
}

# ImageNet statistics for RGB in [0, 1]; the networks here take RGB in [0, 255].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RANDOM = "random"

KERNELS = ("package", "eager")


def _has_fused_activation() -> bool:
    return "activation" in inspect.signature(sff.padded_conv2d).parameters


# Whether padded_conv2d applies the ReLU in its own epilogue (one pass over the output fewer).
_FUSED_RELU = _has_fused_activation()


def _conv_relu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``relu(conv(x))`` of one VGG 3x3 convolution (zero padding 1) on the package kernel. The
    fused form (``activation="relu"``) is used where padded_conv2d has it; otherwise the ReLU
    runs in place on the fresh output (the kernel's backward keeps input and weight, not its
    output). Frozen weights: autograd asks the kernel for the input gradient only."""
    if _FUSED_RELU:
        return sff.padded_conv2d(x, conv.weight, conv.bias, padding=1, padding_mode="zeros",
                                 activation="relu")
    return torch.relu_(sff.padded_conv2d(x, conv.weight, conv.bias, padding=1,
                                         padding_mode="zeros"))


def layer_names(arch: str) -> list[str]:
    """Names of ``features`` modules in index order: ``conv1_1, relu1_1, ..., pool1, ...``."""
    if arch not in _CONFIGS:
        raise ValueError(f"arch must be one of {sorted(_CONFIGS)}, got {arch!r}")
    names, block, k = [], 1, 1
    for v in _CONFIGS[arch]:
        if v == "M":
            names.append(f"pool{block}")
            block, k = block + 1, 1
        else:
            names += [f"conv{block}_{k}", f"relu{block}_{k}"]
            k += 1
    return names


@dataclass(frozen=True)
class WeightSource:
    """Where loss-network weights came from. ``label`` goes into logs and checkpoints."""

    kind: str  # "random", "file", "hub-cache", "download"
    path: str | None = None
    sha256: str | None = None

    @property
    def label(self) -> str:
        if self.kind == RANDOM:
            return "random (UNTRAINED loss network: for tests and smoke runs only)"
        return f"{self.kind}:{self.path}"

    @property
    def is_random(self) -> bool:
        return self.kind == RANDOM


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_prefix(file_name: str) -> str:
    return file_name.rsplit("-", 1)[1].split(".")[0]


def hub_checkpoint_dir() -> str:
    """``$TORCH_HOME/hub/checkpoints`` (``TORCH_HOME`` defaulting as in torch.hub)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def locate_weights(arch: str, weights: str | os.PathLike | None = None) -> WeightSource:
    """Find the weight file for ``arch`` ("vgg16" | "vgg19").

    ``weights``: ``"random"``, a file path, or None for the hub cache, falling back to a download
    from the official URL. A cached or downloaded file must match the SHA-256 prefix in its name.
    Raises FileNotFoundError / RuntimeError with the exact file to place where when offline.
    """
    if arch not in WEIGHT_FILES:
        raise ValueError(f"loss network must be one of {sorted(WEIGHT_FILES)}, got {arch!r}")
    if weights is not None and str(weights) == RANDOM:
        return WeightSource(RANDOM)
    if weights is not None:
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--vgg-weights: no such file {path!r} (expected a "
                                    f"torchvision-format {arch} state dict, or 'random')")
        return WeightSource("file", path)
    file_name, url = WEIGHT_FILES[arch]
    prefix = _expected_prefix(file_name)
    cache_dir = hub_checkpoint_dir()
    cached = os.path.join(cache_dir, file_name)
    if os.path.isfile(cached):
        digest = _sha256(cached)
        if not digest.startswith(prefix):
            raise RuntimeError(
                f"{cached} has SHA-256 {digest[:16]}..., but its name promises a hash starting "
                f"with {prefix}: the file is corrupt or not the official torchvision {arch} "
                f"weights. Delete it and download {url} again.")
        return WeightSource("hub-cache", cached, digest)
    os.makedirs(cache_dir, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, cached, hash_prefix=prefix, progress=True)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise RuntimeError(
            f"could not download the {arch} loss-network weights ({exc}). Without internet, "
            f"download {url} on another machine and place it at {cached} "
            f"(that is $TORCH_HOME/hub/checkpoints/{file_name}), or pass --vgg-weights FILE, or "
            f"--vgg-weights random for an untrained smoke-test network.") from exc
    except RuntimeError as exc:  # torch.hub's hash check
        raise RuntimeError(f"downloaded {url} failed its SHA-256 check (expected prefix "
                           f"{prefix}): {exc}") from exc
    return WeightSource("download", cached, _sha256(cached))


class VGGFeatures(nn.Module):
    """The convolutional part of VGG-16/19, truncated after the deepest requested layer.

    Input: ``(N, 3, H, W)`` RGB in [0, 255] (as the generators produce); ImageNet normalisation
    happens inside. Output: ``{layer_name: (N, C_l, H_l, W_l)}`` for every requested layer
    (channels_last with ``kernels="package"``, the input's layout with ``"eager"``).
    Parameters are frozen (``requires_grad=False``); the module stays in eval mode.
    ``kernels``: ``"package"`` (default) or ``"eager"``, see the module docstring; an attribute
    that may be changed later.
    """

    def __init__(self, arch: str = "vgg16", layers: Iterable[str] = ("relu2_2",),
                 init_seed: int = 0, kernels: str = "package") -> None:
        super().__init__()
        names = layer_names(arch)
        self.arch = arch
        self.kernels = kernels
        self.layers = list(dict.fromkeys(layers))
        unknown = [name for name in self.layers if name not in names]
        if unknown or not self.layers:
            raise ValueError(f"unknown {arch} layer(s) {unknown or '(none given)'}; valid: "
                             f"{[n for n in names if n.startswith('relu')]}")
        depth = max(names.index(name) for name in self.layers) + 1
        self.names = names[:depth]
        modules: list[nn.Module] = []
        in_ch = 3
        for v in _CONFIGS[arch]:
            if len(modules) >= depth:
                break
            if v == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1),
                            nn.ReLU(inplace=True)]
                in_ch = int(v)
        self.features = nn.Sequential(*modules[:depth])
        self.register_buffer("mean", 255.0 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", 255.0 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)
        self.source = WeightSource(RANDOM)
        self.reset_random(init_seed)
        self.requires_grad_(False)
        self.eval()

    def reset_random(self, seed: int = 0) -> None:
        """Untrained weights from a private generator (global RNG untouched, reproducible)."""
        gen = torch.Generator().manual_seed(seed)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                # He init keeps activations O(1) through the untrained stack.
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                with torch.no_grad():
                    std = (2.0 / fan_in) ** 0.5
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                    m.bias.zero_()
        self.source = WeightSource(RANDOM)

    def load_torchvision_state_dict(self, state_dict: Mapping[str, torch.Tensor],
                                    source: WeightSource | None = None) -> None:
        """Load ``features.N.weight/bias`` from a torchvision VGG state dict (deeper layers and
        the classifier are ignored). Missing or mis-shaped keys raise a clear error."""
        own = self.features.state_dict()
        missing = [f"features.{k}" for k in own if f"features.{k}" not in state_dict]
        if missing:
            raise ValueError(f"the {self.arch} weight file lacks {missing[:4]}"
                             f"{' ...' if len(missing) > 4 else ''}: is it a torchvision "
                             f"{self.arch} state dict?")
        loaded = {}
        for k, t in own.items():
            src = state_dict[f"features.{k}"]
            if tuple(src.shape) != tuple(t.shape):
                raise ValueError(f"features.{k} has shape {tuple(src.shape)} in the weight file, "
                                 f"expected {tuple(t.shape)} for {self.arch}")
            loaded[k] = src
        self.features.load_state_dict(loaded)
        self.source = source or WeightSource("file")

    @property
    def kernels(self) -> str:
        return self._kernels

    @kernels.setter
    def kernels(self, value: str) -> None:
        if value not in KERNELS:
            raise ValueError(f"VGGFeatures: kernels must be one of {KERNELS}, got {value!r}")
        self._kernels = value

    def forward(self, x: torch.Tensor, layers: Iterable[str] | None = None
                ) -> dict[str, torch.Tensor]:
        """Features of ``layers`` (default: the layers given at construction; any layer up to
        the deepest of those). The network runs only as deep as the deepest layer asked for."""
        wanted = self.layers if layers is None else list(dict.fromkeys(layers))
        unknown = [name for name in wanted if name not in self.names]
        if unknown or not wanted:
            raise ValueError(f"VGGFeatures.forward: layer(s) {unknown or '(none given)'} not in "
                             f"this network (built to {self.names[-1]}: {self.names})")
        depth = max(self.names.index(name) for name in wanted) + 1
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.kernels == "eager":
            return self._forward_eager(x, set(wanted), depth)
        return self._forward_package(x.contiguous(memory_format=torch.channels_last),
                                     set(wanted), depth)

    def _forward_eager(self, x: torch.Tensor, wanted: set[str], depth: int
                       ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, module in zip(self.names[:depth], self.features):
            x = module(x)
            if name in wanted:
                out[name] = x
        return out

    def _forward_package(self, x: torch.Tensor, wanted: set[str], depth: int
                         ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        i = 0
        while i < depth:
            module = self.features[i]
            if isinstance(module, nn.Conv2d):
                # Conv and its ReLU in one step; a conv layer's output is reported after the
                # ReLU, as the eager path's in-place ReLU leaves it.
                x = _conv_relu(x, module)
                names = self.names[i:i + 2]
                i += 2
            else:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
                names = self.names[i:i + 1]
                i += 1
            for name in names:
                if name in wanted:
                    out[name] = x
        return out

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, layers={self.layers}, kernels={self.kernels!r}, "
                f"weights={self.source.label!r}")


def build_vgg(arch: str, layers: Iterable[str], weights: str | os.PathLike | None = None,
              init_seed: int = 0, kernels: str = "package") -> VGGFeatures:
    """A frozen :class:`VGGFeatures` with weights from :func:`locate_weights`."""
    net = VGGFeatures(arch, layers, init_seed=init_seed, kernels=kernels)
    source = locate_weights(arch, weights)
    if not source.is_random:
        state = torch.load(source.path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        net.load_torchvision_state_dict(state, source)
    return net
