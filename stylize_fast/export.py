"""Export a generator to ONNX (standard ops only, dynamic batch / height / width) or TorchScript.

A multi-style model (``styles > 1``) takes a second input, ``"style"``: float ``(N, styles)``
mixing weights over its styles (one-hot for style k; rows are normalised to sum to 1). An AdaIN
model takes the style image as ``"style"``: ``(1 or N, 3, H', W')`` RGB 0-255, any size; its
``alpha`` is 1 (full style) in the exported graph.

The fused layers are custom ops that ONNX runtimes and TorchScript consumers lack, so the model
is first rebuilt with plain PyTorch layers and the same weights (``models.to_plain``), whose
outputs match.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import torch
from torch import nn

FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17


def _plain_model(model: nn.Module | str | os.PathLike) -> nn.Module:
    from .models import load, to_plain

    if not isinstance(model, nn.Module):
        model = load(model, map_location="cpu")
    return to_plain(model).float().cpu().eval()


@contextlib.contextmanager
def _quiet_tracer():
    """The tracer warns on every Python-level shape check (the models' argument checks); the
    exported graph is verified at other sizes and batches instead (``verify_onnx``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        warnings.filterwarnings("ignore", message=".*'instance_norm' is set to train=True")
        yield


def _example_input(model: nn.Module, size: int) -> torch.Tensor:
    channels = getattr(model, "options", {}).get("in_channels", 3)
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, channels, size, size, generator=generator) * 255


def _styles(model: nn.Module) -> int:
    return int(getattr(model, "styles", 1))


def _example_style(model: nn.Module) -> torch.Tensor:
    """Mixing weights for the multi-style example: a blend (every style's rows in the graph)."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, _styles(model), generator=generator) + 0.1


def _is_adain(model: nn.Module) -> bool:
    return hasattr(model, "stylize_with_stats")


def _inputs(model: nn.Module, size: int) -> tuple[tuple[torch.Tensor, ...], list[str]]:
    """Example inputs and their names: the image, and the style weights of multi-style models
    or the style image of AdaIN models."""
    example = _example_input(model, size)
    if _is_adain(model):
        generator = torch.Generator().manual_seed(1)
        return (example, torch.rand(1, 3, size, size, generator=generator) * 255), \
            ["input", "style"]
    if _styles(model) > 1:
        return (example, _example_style(model)), ["input", "style"]
    return (example,), ["input"]


def export_onnx(model: nn.Module | str | os.PathLike, path: str | os.PathLike, *,
                opset: int = DEFAULT_OPSET, example_size: int = 64) -> str:
    """Write ``model`` as ONNX to ``path``: input ``"input"`` ``(N, C, H, W)`` float32 RGB
    0-255, output ``"output"``, with N, H and W dynamic; multi-style models also take
    ``"style"`` ``(N, styles)`` float32 mixing weights. Returns the path."""
    plain = _plain_model(model)
    path = os.fspath(path)
    inputs, names = _inputs(plain, example_size)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    axes = {"input": dynamic, "output": dynamic}
    if "style" in names:
        axes["style"] = ({0: "style_batch", 2: "style_height", 3: "style_width"}
                         if _is_adain(plain) else {0: "batch"})
    with torch.no_grad(), _quiet_tracer():
        # The TorchScript-based exporter needs no onnxscript and gives standard ops.
        torch.onnx.export(plain, inputs, path, input_names=names,
                          output_names=["output"], opset_version=opset,
                          dynamic_axes=axes, dynamo=False)
    return path


def export_torchscript(model: nn.Module | str | os.PathLike, path: str | os.PathLike, *,
                       example_size: int = 64) -> str:
    """Write ``model`` as a traced TorchScript module (any batch, height and width).
    Returns the path."""
    plain = _plain_model(model)
    path = os.fspath(path)
    inputs, _ = _inputs(plain, example_size)
    with torch.no_grad(), _quiet_tracer():
        traced = torch.jit.trace(plain, inputs, check_trace=False)
    traced.save(path)
    return path


def verify_onnx(model: nn.Module | str | os.PathLike, path: str | os.PathLike,
                sizes: tuple[tuple[int, int], ...] = ((64, 64), (52, 76)),
                atol: float = 1e-2) -> dict[str, Any]:
    """Run the ONNX file in onnxruntime (CPU) on random images of ``sizes`` and compare with
    the PyTorch model; raises AssertionError past ``atol`` (on outputs in 0-255 units).
    Returns ``{"max_abs_diff": ..., "sizes": ...}``."""
    import numpy as np
    import onnxruntime as ort

    plain = _plain_model(model)
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    styles = _styles(plain)
    for i, (h, w) in enumerate(sizes):
        batch = 2 if styles > 1 else 1
        x = torch.rand(batch, 3, h, w, generator=generator) * 255
        feed = {"input": x.numpy()}
        args: tuple[torch.Tensor, ...] = (x,)
        if _is_adain(plain):
            style = torch.rand(1, 3, w, h, generator=generator) * 255
            feed["style"] = style.numpy()
            args = (x, style)
        elif styles > 1:  # a one-hot row (style i) and a blend, in one batch
            style = torch.rand(batch, styles, generator=generator)
            style[0] = 0
            style[0, i % styles] = 1
            feed["style"] = style.numpy()
            args = (x, style)
        with torch.no_grad():
            expected = plain(*args).numpy()
        (actual,) = session.run(["output"], feed)
        if actual.shape != expected.shape:
            raise AssertionError(f"onnxruntime output shape {actual.shape} != PyTorch "
                                 f"{expected.shape} for input {h}x{w}")
        worst = max(worst, float(np.abs(actual - expected).max()))
    if worst > atol:
        raise AssertionError(f"onnxruntime differs from PyTorch by {worst:.3g} (> {atol})")
    return {"max_abs_diff": worst, "sizes": list(sizes)}


def export(model: nn.Module | str | os.PathLike, path: str | os.PathLike, format: str,
           **kwargs: Any) -> str:
    """Export to ``format`` (``"onnx"`` or ``"torchscript"``); see the format functions."""
    if format == "onnx":
        return export_onnx(model, path, **kwargs)
    if format == "torchscript":
        return export_torchscript(model, path, **kwargs)
    raise ValueError(f"export: format must be one of {list(FORMATS)}, got {format!r}")
