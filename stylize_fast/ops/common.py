"""Conventions shared by every op and backend: codes for activations and padding modes,
statistics dtype, output layout. The C++ side mirrors these in csrc/ops.cpp."""

from __future__ import annotations

import enum

import torch
from torch._prims_common import suggest_memory_format

FLOATING_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Activation(enum.IntEnum):
    NONE = 0
    RELU = 1
    LEAKY_RELU = 2


ACTIVATION_NAMES = {None: Activation.NONE, "none": Activation.NONE, "relu": Activation.RELU,
                    "leaky_relu": Activation.LEAKY_RELU}


class PaddingMode(enum.IntEnum):
    ZEROS = 0
    REFLECT = 1
    REPLICATE = 2


PADDING_MODE_NAMES = {"zeros": PaddingMode.ZEROS, "reflect": PaddingMode.REFLECT,
                      "replicate": PaddingMode.REPLICATE}


def activation_code(activation: str | None) -> Activation:
    """Map the public ``activation`` argument to its kernel code, or raise a clear ValueError."""
    try:
        return ACTIVATION_NAMES[activation.lower() if isinstance(activation, str) else activation]
    except (KeyError, TypeError):
        raise ValueError(
            f"activation must be None, 'relu' or 'leaky_relu', got {activation!r}") from None


def padding_mode_code(padding_mode: str) -> PaddingMode:
    try:
        return PADDING_MODE_NAMES[padding_mode]
    except (KeyError, TypeError):
        raise ValueError(f"padding_mode must be one of {sorted(PADDING_MODE_NAMES)}, "
                         f"got {padding_mode!r}") from None


def unsupported_dtype(input: torch.Tensor, *_args) -> str | None:
    """Legality check shared by the compiled kernels: None for a floating dtype they handle,
    else the reason (backends.register's ``supports``)."""
    if input.dtype not in FLOATING_DTYPES:
        return f"dtype {input.dtype} is not supported"
    return None


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics and accumulation dtype: float64 for float64 input, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def output_memory_format(input: torch.Tensor) -> torch.memory_format:
    """The layout every kernel writes its output in (matches C++ suggest_memory_format)."""
    return suggest_memory_format(input)


def empty_output_like(input: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.empty_like(input, dtype=dtype, memory_format=output_memory_format(input))


def apply_activation(x: torch.Tensor, code: int, negative_slope: float) -> torch.Tensor:
    """Reference activation in plain PyTorch."""
    if code == Activation.RELU:
        return torch.relu(x)
    if code == Activation.LEAKY_RELU:
        return torch.nn.functional.leaky_relu(x, negative_slope)
    return x
