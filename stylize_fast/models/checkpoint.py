"""Saving and loading generators.

Our format is a dict (readable with ``torch.load(weights_only=True)``)::

    {"format": "stylize_fast.model", "format_version": 1, "arch": "JohnsonNet",
     "options": {...constructor arguments...}, "state_dict": {...},
     "versions": {"stylize_fast": ..., "torch": ...}, "metadata": {...}}

``load`` also reads the PyTorch examples' ``fast_neural_style`` models: a bare ``state_dict`` of
``TransformerNet``, possibly from before PyTorch 0.4 (``in*.running_mean`` / ``running_var``
entries, dropped as the examples' stylize script does) or saved from ``nn.DataParallel``
(``module.`` prefix).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_torch_save
from .adain import AdaINNet
from .johnson import JohnsonNet
from .texture import TextureNet

FORMAT = "stylize_fast.model"
FORMAT_VERSION = 1
ARCHITECTURES: dict[str, type[nn.Module]] = {"JohnsonNet": JohnsonNet, "TextureNet": TextureNet,
                                              "AdaINNet": AdaINNet}
# Entries pre-0.4 PyTorch wrote for InstanceNorm2d (then tracking running stats by default).
_LEGACY_STATS = re.compile(r"(^|\.)in\d+\.(running_mean|running_var|num_batches_tracked)$")


def _plain(value: Any) -> Any:
    """Options/metadata restricted to what the weights_only unpickler accepts."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, str):  # subclasses such as TorchVersion are not allowed by torch.load
        return str(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):  # IntEnum and friends
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    raise TypeError(f"save: metadata values must be numbers, strings, lists, dicts or tensors; "
                    f"got {type(value).__name__}")


def save(model: nn.Module, path: str | os.PathLike, **metadata: Any) -> None:
    """Write ``model`` (a JohnsonNet or TextureNet) to ``path`` atomically: a temporary file in
    the same folder, flushed and fsynced, then renamed over ``path``. ``metadata`` (e.g. style
    image, iterations) is stored alongside and returned by :func:`load_checkpoint`."""
    from .. import __version__

    while True:  # torch.compile / DataParallel / DistributedDataParallel wrappers
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            break
    arch = type(model).__name__
    if arch not in ARCHITECTURES or not hasattr(model, "options"):
        raise TypeError(f"save: model must be one of {sorted(ARCHITECTURES)}, got {arch}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    checkpoint = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "options": _plain(model.options),
        "state_dict": state,
        "versions": {"stylize_fast": str(__version__), "torch": str(torch.__version__)},
        "metadata": _plain(metadata),
    }
    atomic_torch_save(checkpoint, path)


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        shown = ", ".join(repr(k) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
        return f"a dict with {len(keys)} keys ({shown})"
    return f"an object of type {type(obj).__name__}"


def _examples_state_dict(obj: Mapping) -> dict[str, torch.Tensor] | None:
    """The cleaned state_dict if ``obj`` looks like a saved TransformerNet, else None."""
    if not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                          for k, v in obj.items()):
        return None
    state = {}
    for key, value in obj.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if _LEGACY_STATS.search(key):
            continue
        state[key] = value
    if "conv1.conv2d.weight" not in state or "deconv3.conv2d.weight" not in state:
        return None
    return state


def _johnson_options(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor options of the JohnsonNet variant whose weights are ``state``."""
    first = state["conv1.conv2d.weight"]
    last = state["deconv3.conv2d.weight"]
    residual = {int(m.group(1)) for k in state if (m := re.match(r"res(\d+)\.", k))}
    return dict(channels=int(first.shape[0]), in_channels=int(first.shape[1]),
                out_channels=int(last.shape[0]), final_kernel=int(last.shape[-1]),
                num_residual=max(residual, default=0))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a model file into our checkpoint dict (``arch``, ``options``, ``state_dict``,
    ``versions``, ``metadata``), converting the PyTorch examples' format. Never unpickles
    arbitrary objects (``weights_only=True``)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors all mean "not a model file"
        raise ValueError(f"{path}: not a loadable model file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        if obj.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path}: checkpoint format version {obj.get('format_version')} "
                             f"is newer than this stylize_fast understands ({FORMAT_VERSION})")
        if obj.get("arch") not in ARCHITECTURES:
            raise ValueError(f"{path}: unknown architecture {obj.get('arch')!r}; expected one "
                             f"of {sorted(ARCHITECTURES)}")
        return {"arch": obj["arch"], "options": dict(obj.get("options", {})),
                "state_dict": obj["state_dict"], "versions": obj.get("versions", {}),
                "metadata": obj.get("metadata", {}), "source": "stylize_fast"}
    state = _examples_state_dict(obj) if isinstance(obj, Mapping) else None
    if state is None:
        raise ValueError(
            f"{path}: not a stylize_fast checkpoint nor a PyTorch examples fast_neural_style "
            f"model; found {_describe(obj)}")
    return {"arch": "JohnsonNet", "options": _johnson_options(state), "state_dict": state,
            "versions": {}, "metadata": {}, "source": "pytorch_examples"}


def build(arch: str, options: Mapping[str, Any], norm: str | None = None) -> nn.Module:
    """A fresh model of ``arch`` with ``options``, optionally overriding ``norm``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    options = dict(options)
    if norm is not None:
        options["norm"] = norm
    try:
        return ARCHITECTURES[arch](**options)
    except TypeError as exc:  # options written by a different version of the package
        raise ValueError(f"cannot build {arch} with the recorded options {options}: {exc}") \
            from exc


def load(path: str | os.PathLike, map_location: Any = "cpu", *,
         norm: str | None = None) -> nn.Module:
    """Load a generator from this package's checkpoints or a PyTorch examples
    ``fast_neural_style`` model (with ``weights_only=True``), in eval mode.

    Args:
        path: the model file.
        map_location: as for ``torch.load``.
        norm: build the model with this norm instead of the recorded one (e.g. ``"instance"``
            for a plain-PyTorch copy of a fused model); examples models default to ``"fused"``.

    Raises:
        FileNotFoundError: no such file. ValueError: a file of another kind (says what was found)
        or weights that do not fit the recorded architecture.
    """
    ckpt = load_checkpoint(path, map_location)
    model = build(ckpt["arch"], ckpt["options"], norm)
    if norm is not None and (norm == "batch") != (ckpt["options"].get("norm") == "batch"):
        raise ValueError(f"{path}: cannot load a norm={ckpt['options'].get('norm')!r} model "
                         f"as norm={norm!r} (batch-norm weights carry running statistics)")
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit {ckpt['arch']}"
                         f"({ckpt['options']}): {exc}") from exc
    if map_location is not None:
        first = next(iter(ckpt["state_dict"].values()), None)
        if first is not None:
            model.to(first.device)
    return model.eval()
