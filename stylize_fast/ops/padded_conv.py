"""Padded convolution (padding applied inside the kernel): argument checks, autograd and fake
(meta) registration of the compiled ops, and the per-backend implementation table.

Kernels live in: csrc/cpu/padded_conv_cpu.cpp (cpu), csrc/cuda/padded_conv_cuda.cpp (cuda),
stylize_fast/ops/padded_conv_triton.py (triton); the reference in padded_conv_reference.py.
Every backend implements the same internal signature

    fwd(input, weight, bias, stride: tuple[int, int], padding: tuple[int, int],
        padding_mode_code: int, activation_code: int) -> output

(activation_code: 0 none, 1 relu, applied in the kernels' output store.) The compiled op
(cpu, cuda) and the Triton op take one more, ``upsample`` (nearest upsampling of the input
before the padding, folded into the CPU Winograd kernel's and the Triton kernels' input reads);
for the reference the input is upsampled here first (``UPSAMPLE_NATIVE``).

with the arguments already checked by :func:`check_args` (same dtype and device, groups = 1).
The output has the input's suggested memory format (channels_last in -> channels_last out).
"""

from __future__ import annotations

import functools
import numbers

import torch
import torch.nn.functional as F

from .. import _extension, backends, config
from . import padded_conv_reference as reference
from .common import (
    FLOATING_DTYPES,
    Activation,
    PaddingMode,
    output_memory_format,
    padding_mode_code,
    unsupported_dtype,
)

OP = "padded_conv2d"
# Backends whose kernel takes the upsample argument (the compiled op, whose CUDA binding upsamples
# first; Triton folds it into its loads); for the reference the input is upsampled first.
UPSAMPLE_NATIVE = ("cpu", "cuda", "triton")


def check_upsample(upsample, *, fn: str = "padded_conv2d") -> int:
    """The public ``upsample`` argument as an int >= 1, or a clear error naming it."""
    if isinstance(upsample, bool) or not isinstance(upsample, numbers.Integral):
        raise TypeError(f"{fn}: upsample must be an int >= 1 (nearest upsampling factor, 1 = "
                        f"none), got {upsample!r}")
    if upsample < 1:
        raise ValueError(f"{fn}: upsample must be >= 1 (1 = none), got {upsample!r}")
    return int(upsample)


def _pair(value, name: str, fn: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (isinstance(value, (tuple, list, torch.Size)) and len(value) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}")
    return pair


def check_args(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    padding_mode: str,
    *,
    fn: str = "padded_conv2d",
    upsample: int = 1,
) -> tuple[tuple[int, int], tuple[int, int], PaddingMode]:
    """Validate the public arguments (``upsample`` already checked: the padding applies to the
    upsampled input); return (stride, padding, padding_mode_code)."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{fn}: input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        hint = " (for one unbatched image use input.unsqueeze(0))" if input.dim() == 3 else ""
        raise ValueError(f"{fn}: input must have 4 dimensions (N, C, H, W), got "
                         f"{input.dim()} with shape {tuple(input.shape)}{hint}")
    if input.dtype not in FLOATING_DTYPES:
        raise TypeError(f"{fn}: input must be a floating-point tensor (float16, bfloat16, float32 "
                        f"or float64), got {input.dtype}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{fn}: weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 4:
        raise ValueError(f"{fn}: weight must have 4 dimensions (O, C, KH, KW), got "
                         f"{weight.dim()} with shape {tuple(weight.shape)}")
    if weight.shape[1] != input.shape[1]:
        raise ValueError(f"{fn}: weight of shape {tuple(weight.shape)} expects "
                         f"{weight.shape[1]} input channels but input has {input.shape[1]} "
                         f"(shape {tuple(input.shape)}); only groups=1 is supported")
    if min(weight.shape) < 1:
        raise ValueError(f"{fn}: weight must be non-empty, got shape {tuple(weight.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.device != input.device:
            raise ValueError(f"{fn}: {name} is on {t.device} but input is on {input.device}; "
                             "all tensors must be on the same device")
        if t.dtype != input.dtype:
            raise TypeError(f"{fn}: {name} dtype {t.dtype} must equal the input dtype "
                            f"{input.dtype}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{fn}: bias must have shape (O,) = ({weight.shape[0]},), got "
                         f"{tuple(bias.shape)}")
    stride = _pair(stride, "stride", fn, 1)
    if isinstance(padding, str):
        raise ValueError(f"{fn}: padding must be an int or a pair of ints (string padding such "
                         f"as {padding!r} is not supported), got {padding!r}")
    padding = _pair(padding, "padding", fn, 0)
    code = padding_mode_code(padding_mode)
    h, w = input.shape[2] * upsample, input.shape[3] * upsample
    if code == PaddingMode.REFLECT and (padding[0] >= h or padding[1] >= w):
        raise ValueError(f"{fn}: reflect padding must be smaller than the input size in that "
                         f"dimension (as F.pad): padding (pad_h, pad_w) = {padding} for input "
                         f"of height {h} and width {w}")
    if code == PaddingMode.REPLICATE and (h == 0 or w == 0) and max(padding) > 0:
        raise ValueError(f"{fn}: replicate padding needs a non-empty input plane, got input "
                         f"shape {tuple(input.shape)}")
    kh, kw = weight.shape[2], weight.shape[3]
    if h + 2 * padding[0] < kh or w + 2 * padding[1] < kw:
        raise ValueError(f"{fn}: padded input ({h + 2 * padding[0]} x {w + 2 * padding[1]}) is "
                         f"smaller than the kernel ({kh} x {kw})")
    return stride, padding, code


# The activations the padded convolution fuses (a subset of common.ACTIVATION_NAMES).
CONV_ACTIVATIONS = {None: Activation.NONE, "none": Activation.NONE, "relu": Activation.RELU}


def check_activation(activation: str | None, *, fn: str = "padded_conv2d") -> Activation:
    """The kernel code of the public ``activation`` argument (None or ``"relu"``), or a clear
    ValueError naming it."""
    key = activation.lower() if isinstance(activation, str) else activation
    try:
        return CONV_ACTIVATIONS[key]
    except (KeyError, TypeError):
        pass
    hint = (" ('leaky_relu' is not implemented for the padded convolution yet)"
            if key == "leaky_relu" else "")
    raise ValueError(f"{fn}: activation must be None or 'relu', got {activation!r}{hint}")


def output_shape(input: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                 padding: tuple[int, int], upsample: int = 1) -> tuple[int, int, int, int]:
    """``(N, O, HO, WO)`` of the padded convolution (of the input upsampled ``upsample`` times)."""
    n, _, h, w = input.shape
    h, w = h * upsample, w * upsample
    o, _, kh, kw = weight.shape
    return (n, o, (h + 2 * padding[0] - kh) // stride[0] + 1,
            (w + 2 * padding[1] - kw) // stride[1] + 1)


def padded_conv2d_checked(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    padding_mode: int,
    activation: int = Activation.NONE,
    upsample: int = 1,
) -> torch.Tensor:
    """Run the selected backend on checked arguments."""
    name = "reference"
    if input.numel() > 0:
        name, fn = backends.select(OP, input, weight, bias, stride, padding, padding_mode,
                                   upsample)
    if upsample > 1 and name in UPSAMPLE_NATIVE:
        return fn(input, weight, bias, stride, padding, int(padding_mode), int(activation),
                  upsample)
    if upsample > 1:
        input = upsample_nearest(input, upsample)
    if input.numel() == 0:
        return reference.padded_conv2d_forward(input, weight, bias, stride, padding, padding_mode,
                                               activation)
    return fn(input, weight, bias, stride, padding, int(padding_mode), int(activation))


def upsample_nearest(input: torch.Tensor, upsample: int) -> torch.Tensor:
    """``input`` upsampled ``upsample`` times (nearest; source pixel = index // upsample), in its
    memory format: what the folded kernels read without building it."""
    return F.interpolate(input, size=(input.shape[2] * upsample, input.shape[3] * upsample),
                         mode="nearest")


def padded_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    padding_mode: str = "reflect",
    activation: str | None = None,
    upsample: int = 1,
) -> torch.Tensor:
    """``act(F.conv2d(F.pad(input, (pw, pw, ph, ph), padding_mode), weight, bias, stride))``
    without building the padded tensor; the activation is applied in the kernel's output store.
    With ``upsample=s`` the input is first upsampled ``s`` times (nearest, as
    ``F.interpolate(input, scale_factor=s)``): a nearest upsampling + conv layer in one op.

    Args:
        input: ``(N, C, H, W)``, float16 / bfloat16 / float32 / float64, any memory format.
        weight: ``(O, C, KH, KW)`` (groups = 1, dilation = 1), input's dtype and device.
        bias: ``(O,)`` or None.
        stride: int or ``(sh, sw)``, >= 1.
        padding: int or ``(ph, pw)``, >= 0; reflect needs ``ph < H`` and ``pw < W``.
        padding_mode: ``"reflect"``, ``"replicate"`` or ``"zeros"``.
        activation: None or ``"relu"``. With ``"relu"`` the backward masks the gradient with
            ``output > 0`` (the output is saved for it; without an activation it is not).
        upsample: int >= 1, nearest upsampling factor applied before the padding (1 = none).
            The CPU Winograd kernel (3x3 stride 1, float32 / bfloat16) reads the input through
            its index map, so neither the forward nor autograd's saved tensors hold an
            upsampled copy; other kernels upsample first.

    Returns:
        ``(N, O, (sH + 2 ph - KH) // sh + 1, (sW + 2 pw - KW) // sw + 1)`` (s = upsample) in the
        input's memory format. Differentiable in input, weight and bias. Under ``torch.autocast`` the
        tensors are cast to the autocast dtype first, as ``F.conv2d`` does.
    """
    if isinstance(input, torch.Tensor) and torch.is_autocast_enabled(input.device.type):
        dtype = torch.get_autocast_dtype(input.device.type)
        input, weight = input.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if isinstance(bias, torch.Tensor) else bias
    upsample = check_upsample(upsample)
    stride, padding, code = check_args(input, weight, bias, stride, padding, padding_mode,
                                       upsample=upsample)
    act = check_activation(activation)
    return padded_conv2d_checked(input, weight, bias, stride, padding, code, act, upsample)


# --------------------------------------------------------------------------------------------
# Autograd + fake registration, shared by the compiled ops and the Triton ops.


def register_autograd(fwd_op, bwd_op) -> None:
    """Make ``fwd_op`` (schema of padded_conv2d_fwd) differentiable via ``bwd_op`` (schema of
    padded_conv2d_bwd). Saves input and weight, and with an activation the output (the
    backward's mask is ``output > 0``); without one the output is not saved. Used by the Triton
    ops; the compiled op has the same in C++ (csrc/autograd.cpp)."""

    def setup_context(ctx, inputs, output):
        input, weight, bias, stride, padding, padding_mode = inputs[:6]
        ctx.activation = int(inputs[6]) if len(inputs) > 6 else 0
        ctx.upsample = int(inputs[7]) if len(inputs) > 7 else 1
        if ctx.activation:
            ctx.save_for_backward(input, weight, output)
        else:
            ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None
        ctx.stride, ctx.padding, ctx.padding_mode = stride, padding, padding_mode

    def backward(ctx, grad_output):
        input, weight, *output = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                ctx.has_bias and ctx.needs_input_grad[2]]
        grads = bwd_op(grad_output, input, weight, ctx.stride, ctx.padding, ctx.padding_mode,
                       mask, output[0] if output else None, ctx.activation, ctx.upsample)
        return (*(g if m else None for g, m in zip(grads, mask)), None, None, None, None, None)

    torch.library.register_autograd(fwd_op, backward, setup_context=setup_context)


def fake_forward(input, weight, bias, stride, padding, padding_mode, activation=0, upsample=1):
    return torch.empty(output_shape(input, weight, stride, padding, upsample), dtype=input.dtype,
                       device=input.device, memory_format=output_memory_format(input))


def fake_backward(grad_output, input, weight, stride, padding, padding_mode, output_mask,
                  output=None, activation=0, upsample=1):
    # grad_input in the input's layout; grad_weight contiguous; grad_bias (O,); unrequested (0,).
    grad_input = (torch.empty(input.shape, dtype=input.dtype, device=input.device,
                              memory_format=output_memory_format(input))
                  if output_mask[0] else input.new_empty((0,)))
    grad_weight = weight.new_empty(weight.shape) if output_mask[1] else input.new_empty((0,))
    grad_bias = weight.new_empty((weight.shape[0],)) if output_mask[2] else input.new_empty((0,))
    return grad_input, grad_weight, grad_bias


@functools.lru_cache(maxsize=4096)
def _cpu_algorithm_cached(*key) -> str:
    (input_size, weight_size, dtype, channels_last, stride, padding, mode, input_grad,
     weight_grad, upsample, _forced) = key
    return torch.ops.stylize_fast.padded_conv2d_cpu_algorithm(
        list(input_size), list(weight_size), dtype, channels_last, list(stride), list(padding),
        mode, input_grad, weight_grad, upsample)


# Asked with plain sizes, and treated as a constant by torch.compile: the answer depends only on
# shapes, dtype, layout and config's conv_algo, never on tensor values. (A separate function from
# the cache: dynamo traces through an lru_cache wrapper and ignores the constant mark on it.)
@torch.compiler.assume_constant_result
def _cpu_algorithm(*key) -> str:
    return _cpu_algorithm_cached(*key)


def cpu_algorithm(input: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                  padding: tuple[int, int], padding_mode: int, *, input_grad: bool = False,
                  weight_grad: bool = False, upsample: int = 1) -> str:
    """The algorithm the C++ CPU kernel runs for these (checked) arguments: ``"direct"`` (few
    output or input channels, float32 stride 2 in NCHW), ``"winograd"`` (3x3 stride 1, float32 /
    bfloat16) or ``"library"`` (oneDNN with zero padding + border fix-up) -- for the forward, or
    with ``input_grad`` for the backward's input gradient (direct or Winograd where they apply),
    or with ``weight_grad`` for its weight gradient (``"direct"``: the weight-gradient kernel for
    few output channels). ``config`` option ``conv_algo`` (``STYLIZE_FAST_CONV_ALGO``) forces one.
    With ``upsample``, the algorithm for the upsampled input's geometry (the forward folds the
    upsampling only into Winograd; the backward folds it when its weight gradient, if asked for,
    is Winograd's and its input gradient, if asked for, is not the library's)."""
    if input_grad and weight_grad:
        raise ValueError("cpu_algorithm: ask for input_grad or weight_grad, not both")
    return _cpu_algorithm(tuple(int(s) for s in input.shape), tuple(int(s) for s in weight.shape),
                          input.dtype, output_memory_format(input) == torch.channels_last,
                          tuple(stride), tuple(padding), int(padding_mode), bool(input_grad),
                          bool(weight_grad), int(upsample), config.get("conv_algo"))


def _cpu_kernel_pays(input, weight, bias, stride, padding, padding_mode, upsample=1) -> bool:
    """Automatic choice on CPU: the C++ kernel when it runs one of its own algorithms (measured
    faster than F.pad + F.conv2d, README Performance); its library path (border fix-up) saves the
    padded copy's memory but measures 1.0-1.1x the eager pair's time, so the reference (the eager
    pair) runs those layers unless sf.backends.use("cpu") forces the kernel."""
    return cpu_algorithm(input, weight, stride, padding, padding_mode,
                         upsample=upsample) != "library"


def _register_compiled_ops() -> None:
    if not _extension.loaded() or not _extension.has_kernel("padded_conv2d_fwd", "CPU") and \
            not _extension.has_kernel("padded_conv2d_fwd", "CUDA"):
        return
    ops = torch.ops.stylize_fast
    torch.library.register_fake("stylize_fast::padded_conv2d_fwd")(fake_forward)
    torch.library.register_fake("stylize_fast::padded_conv2d_bwd")(fake_backward)
    # Autograd of the compiled op: in C++ (csrc/autograd.cpp), like register_autograd above.
    for backend, key in (("cpu", "CPU"), ("cuda", "CUDA")):
        if _extension.has_kernel("padded_conv2d_fwd", key):
            backends.register(OP, backend, ops.padded_conv2d_fwd, devices=(backend,),
                              supports=unsupported_dtype,
                              auto=_cpu_kernel_pays if backend == "cpu" else True)


backends.register(OP, "reference", reference.padded_conv2d_forward, devices=None)
_register_compiled_ops()
