"""Export a generator to ONNX (standard ops only, dynamic batch / height / width) or TorchScript.

The fused layers are custom ops that ONNX runtimes and TorchScript consumers lack, so the model
is first rebuilt with plain PyTorch layers and the same weights (``models.to_plain``), whose
outputs match.
"""

from __future__ import annotations

import os
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


def _example_input(model: nn.Module, size: int) -> torch.Tensor:
    channels = getattr(model, "options", {}).get("in_channels", 3)
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, channels, size, size, generator=generator) * 255


def export_onnx(model: nn.Module | str | os.PathLike, path: str | os.PathLike, *,
                opset: int = DEFAULT_OPSET, example_size: int = 64) -> str:
    """Write ``model`` as ONNX to ``path``: input ``"input"`` ``(N, C, H, W)`` float32 RGB
    0-255, output ``"output"``, with N, H and W dynamic. Returns the path."""
    plain = _plain_model(model)
    path = os.fspath(path)
    example = _example_input(plain, example_size)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        # The TorchScript-based exporter needs no onnxscript and gives standard ops.
        torch.onnx.export(plain, (example,), path, input_names=["input"],
                          output_names=["output"], opset_version=opset,
                          dynamic_axes={"input": dynamic, "output": dynamic}, dynamo=False)
    return path


def export_torchscript(model: nn.Module | str | os.PathLike, path: str | os.PathLike, *,
                       example_size: int = 64) -> str:
    """Write ``model`` as a traced TorchScript module (any batch, height and width).
    Returns the path."""
    plain = _plain_model(model)
    path = os.fspath(path)
    example = _example_input(plain, example_size)
    with torch.no_grad():
        traced = torch.jit.trace(plain, example, check_trace=False)
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
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=generator) * 255
        with torch.no_grad():
            expected = plain(x).numpy()
        (actual,) = session.run(["output"], {"input": x.numpy()})
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
