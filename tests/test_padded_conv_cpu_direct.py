"""Tests specific to the direct kernel of the CPU padded convolution
(csrc/cpu/padded_conv_cpu_direct.cpp): few output channels, stride 1, float32 / bfloat16 /
float16. Every call here runs with STYLIZE_FAST_CONV_ALGO=direct and first asserts that the op
really picks the direct kernel, then compares with the float64 reference
F.conv2d(F.pad(x.double(), mode), w.double(), b.double()) on fresh random inputs, with the
output poisoned (NaN) beforehand so that unwritten elements show up.

Covered: the three padding modes, kernel sizes 1..9 square and rectangular, every output-channel
count the kernel takes (1..8), odd / tiny / one-row images, pad = size - 1, asymmetric and zero
padding, batches, 1..32 input channels, contiguous / channels_last / strided / sliced /
permuted inputs, bias or none, each x86 instruction-set level, determinism across thread
counts, which layers the kernel takes or refuses, and the public function on Johnson's last
layer.
Generic backend-parametrised tests live in test_padded_conv.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import stylize_fast as sf
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    make_input,
    poisoned_outputs,
    tolerance,
)

pytestmark = pytest.mark.skipif(not sf.backends.available()["cpu"],
                                reason="C++ extension not built")

ops = torch.ops.stylize_fast
MODES = {"zeros": 0, "reflect": 1, "replicate": 2}
MAX_OUT = 8  # the kernel's output-channel cap (kMaxOut)
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
LEVELS = ["default", "avx2", "avx512"]
# Input layouts: make_input's three, plus views the kernel must read through their strides.
LAYOUTS = ["contiguous", "channels_last", "strided", "sliced", "permuted", "channels_last_sliced",
           "channels_last_offset"]


@pytest.fixture(autouse=True)
def _direct(monkeypatch):
    monkeypatch.setenv("STYLIZE_FAST_CONV_ALGO", "direct")


def _tolerance(dtype):
    # float32 accumulates in float32. Half inputs are exact in float32 and the output is rounded
    # once: within half an ulp of the output dtype, plus the float32 accumulation error.
    if dtype == torch.bfloat16:
        return {"atol": 1e-4, "rtol": 2.0 ** -8}
    if dtype == torch.float16:
        return {"atol": 1e-4, "rtol": 2.0 ** -10}
    return tolerance(dtype)


def _input(shape, dtype=torch.float32, layout="contiguous"):
    n, c, h, w = shape
    if layout in ("contiguous", "channels_last", "strided"):
        return make_input(shape, dtype, layout)
    if layout == "sliced":  # rows and every other column of a larger tensor
        return make_input((n, c, h + 2, 2 * w), dtype)[:, :, 1:-1, ::2]
    if layout == "permuted":  # H and W swapped in memory: unit stride along H
        return make_input((n, c, w, h), dtype).transpose(2, 3)
    if layout == "channels_last_sliced":  # channel stride 2
        return make_input((n, 2 * c, h, w + 1), dtype, "channels_last")[:, ::2, :, 1:]
    if layout == "channels_last_offset":  # channels_last view starting 3 columns in
        return make_input((n, c, h, w + 3), dtype, "channels_last")[..., 3:]
    raise ValueError(layout)


def _params(o, c, kh, kw, dtype=torch.float32, bias=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    scale = (c * kh * kw) ** -0.5  # outputs O(1), as nn.Conv2d's init
    w = torch.randn(o, c, kh, kw, generator=g, dtype=torch.float64) * scale
    b = torch.randn(o, generator=g, dtype=torch.float64) if bias else None
    return w.to(dtype), (b.to(dtype) if bias else None)


def _reference(x, w, b, padding, mode):
    ph, pw = padding
    xp = F.pad(x.double(), (pw, pw, ph, ph), mode="constant" if mode == "zeros" else mode)
    return F.conv2d(xp, w.double(), None if b is None else b.double())


def _algorithm(x, w, stride, padding, mode):
    """The forward algorithm the CPU op picks for this call."""
    from stylize_fast.ops import padded_conv

    return padded_conv.cpu_algorithm(x, w, tuple(stride), tuple(padding), MODES[mode])


def _check(x, w, b, padding, mode):
    padding = list(padding)
    code = MODES[mode]
    assert _algorithm(x, w, [1, 1], padding, mode) == "direct"
    with poisoned_outputs():
        y = ops.padded_conv2d_fwd(x, w, b, [1, 1], padding, code)
    assert_all_written(y)
    assert y.dtype == x.dtype
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last), y.stride()
    elif x.is_contiguous():
        assert y.is_contiguous(), y.stride()
    assert_close(y, _reference(x, w, b, padding, mode), **_tolerance(x.dtype))
    return y


# ---------------------------------------------------------------------------------------------
# Geometry


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (5, 5), (7, 7), (9, 9), (3, 5), (5, 1),
                                    (2, 4)], ids=lambda k: f"{k[0]}x{k[1]}")
def test_modes_and_kernels(mode, kernel):
    kh, kw = kernel
    x = _input((1, 3, 7, 13))
    w, b = _params(3, 3, kh, kw)
    _check(x, w, b, (kh // 2, kw // 2), mode)


@pytest.mark.parametrize("o", range(1, MAX_OUT + 1))
@pytest.mark.parametrize("k", [3, 9])
@pytest.mark.parametrize("width", [37, 300])
def test_output_channels(o, k, width):
    # Width 300: several full column blocks and a partial one at every vector width.
    x = _input((2, 5, 11, width))
    w, b = _params(o, 5, k, k)
    _check(x, w, b, (k // 2, k // 2), "reflect")


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("shape,kernel,padding", [
    pytest.param((1, 2, 7, 13), (3, 3), (0, 0), id="pad0"),
    pytest.param((1, 2, 7, 13), (3, 3), (2, 0), id="pad-h-only"),
    pytest.param((1, 2, 7, 13), (5, 3), (0, 3), id="pad-w-only"),
    pytest.param((1, 2, 5, 6), (3, 3), (4, 5), id="pad=size-1"),
    pytest.param((1, 2, 5, 6), (9, 9), (4, 5), id="pad=size-1-k9"),
    pytest.param((2, 3, 1, 40), (1, 3), (0, 1), id="one-row"),
    pytest.param((2, 3, 40, 1), (3, 1), (1, 0), id="one-column"),
    pytest.param((1, 2, 6, 6), (6, 6), (0, 0), id="1x1-output"),
    pytest.param((1, 2, 4, 5), (9, 9), (3, 4), id="kernel-larger-than-image"),
])
def test_edge_shapes(mode, shape, kernel, padding):
    ph, pw = padding
    if mode == "reflect" and (ph >= shape[2] or pw >= shape[3]):
        pytest.skip("reflect padding must be smaller than the input")
    x = _input(shape)
    w, b = _params(3, shape[1], *kernel)
    _check(x, w, b, padding, mode)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("c", [1, 3, 32])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_batch_channels_bias(n, c, bias):
    # Several images per task and tasks that start mid-image (the packed-row ring restarts).
    x = _input((n, c, 9, 23))
    w, b = _params(4, c, 5, 5, bias=bias)
    _check(x, w, b, (2, 2), "reflect")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_weight_and_bias_views(dtype):
    # Weight and bias are read through their strides too.
    x = _input((1, 6, 8, 19), dtype)
    w, b = _params(5, 6, 3, 5, dtype)
    w_view = w.transpose(0, 1).contiguous().transpose(0, 1)  # (O, C) swapped in memory
    b_view = torch.stack([b, torch.full_like(b, float("nan"))], 1)[:, 0]  # stride 2
    assert not w_view.is_contiguous() and b_view.stride() == (2,)
    _check(x, w_view, b_view, (1, 2), "replicate")
    _check(x, w.contiguous(memory_format=torch.channels_last), b, (1, 2), "zeros")


# ---------------------------------------------------------------------------------------------
# Layouts and dtypes


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("c", [3, 20, 32])
def test_layouts_and_dtypes(layout, dtype, c):
    # 20 and 32 channels with 37 columns: full and partial transposed tiles of channels_last
    # rows at every vector width, and the one-at-a-time leftovers.
    x = _input((2, c, 6, 37), dtype, layout)
    w, b = _params(3, c, 3, 5, dtype)
    _check(x, w, b, (1, 2), "reflect")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", list(MODES))
def test_johnson_layer_dtypes(dtype, mode):
    x = _input((1, 32, 24, 40), dtype, "channels_last")
    w, b = _params(3, 32, 9, 9, dtype)
    _check(x, w, b, (4, 4), mode)


# ---------------------------------------------------------------------------------------------
# Instruction-set levels, determinism


def _supported_levels(monkeypatch):
    monkeypatch.delenv("STYLIZE_FAST_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    best = ops.instance_norm_cpu_isa()
    return LEVELS[: LEVELS.index(best) + 1] if best in LEVELS else [best]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_each_instruction_set(level, dtype, layout, monkeypatch):
    if level not in _supported_levels(monkeypatch):
        pytest.skip(f"this CPU does not run {level}")
    monkeypatch.setenv("STYLIZE_FAST_CPU_ISA", level)
    assert ops.instance_norm_cpu_isa() == level
    # bfloat16 channels_last stays with the library above 6 outputs (see test_choice_rule).
    top = 6 if dtype == torch.bfloat16 and layout == "channels_last" else MAX_OUT
    for o, k in ((1, 3), (3, 9), (top, 5)):
        x = _input((2, 20, 7, 45), dtype, layout)
        w, b = _params(o, 20, k, k + 2 if k < 9 else k, dtype)
        _check(x, w, b, (k // 2, k // 2 + (1 if k < 9 else 0)), "reflect")


def test_same_result_for_any_thread_count():
    # Every output is summed in the same order whatever the task split: bit-identical. With 3
    # threads the 80 output rows split into tasks that start mid-image.
    x = _input((2, 8, 40, 70))
    w, b = _params(3, 8, 9, 9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.padded_conv2d_fwd(x, w, b, [1, 1], [4, 4], MODES["reflect"])
        torch.set_num_threads(3)
        many = ops.padded_conv2d_fwd(x, w, b, [1, 1], [4, 4], MODES["reflect"])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    assert_close(many, _reference(x, w, b, (4, 4), "reflect"), **tolerance(torch.float32))


# ---------------------------------------------------------------------------------------------
# Which layers take the kernel


@pytest.mark.parametrize("case", ["float64", "stride2", "many-outputs"])
def test_refused_layers_stay_on_the_library(case, monkeypatch):
    dtype = torch.float64 if case == "float64" else torch.float32
    stride = [2, 2] if case == "stride2" else [1, 1]
    o = 4 * MAX_OUT if case == "many-outputs" else 3
    x = _input((1, 4, 12, 12), dtype)
    w, b = _params(o, 4, 5, 5, dtype)
    monkeypatch.delenv("STYLIZE_FAST_CONV_ALGO")
    assert _algorithm(x, w, stride, [2, 2], "reflect") == "library"
    monkeypatch.setenv("STYLIZE_FAST_CONV_ALGO", "direct")
    with pytest.raises(RuntimeError, match="direct kernel does not handle"):
        ops.padded_conv2d_fwd(x, w, b, stride, [2, 2], MODES["reflect"])


@pytest.mark.parametrize("case,expected", [
    pytest.param(((1, 32, 64, 64), 3, 9, torch.float32, "contiguous"), "direct", id="johnson"),
    pytest.param(((1, 32, 64, 64), 3, 9, torch.bfloat16, "channels_last"), "direct",
                 id="johnson-bf16-cl"),
    pytest.param(((1, 16, 32, 32), 8, 1, torch.float32, "contiguous"), "direct", id="1x1"),
    pytest.param(((1, 16, 32, 32), 8, 1, torch.float32, "channels_last"), "library",
                 id="1x1-cl"),
    pytest.param(((1, 16, 32, 32), 8, 1, torch.float16, "channels_last"), "direct",
                 id="1x1-cl-f16"),
    pytest.param(((1, 16, 32, 32), 8, 3, torch.bfloat16, "contiguous"), "direct", id="bf16-o8"),
    pytest.param(((1, 16, 32, 32), 6, 3, torch.bfloat16, "channels_last"), "direct",
                 id="bf16-cl-o6"),
    pytest.param(((1, 16, 32, 32), 7, 3, torch.bfloat16, "channels_last"), "library",
                 id="bf16-cl-o7"),
])
def test_choice_rule(case, expected, monkeypatch):
    # Without STYLIZE_FAST_CONV_ALGO: the direct kernel where it was measured faster.
    shape, o, k, dtype, layout = case
    monkeypatch.delenv("STYLIZE_FAST_CONV_ALGO")
    x = _input(shape, dtype, layout)
    w, _ = _params(o, shape[1], k, k, dtype)
    assert _algorithm(x, w, [1, 1], [k // 2, k // 2], "reflect") == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_public_function_johnson_layer(dtype, monkeypatch):
    # The generator's last layer through sf.functional on the cpu backend (algorithm chosen
    # automatically), against the eager F.pad + F.conv2d in float64.
    monkeypatch.delenv("STYLIZE_FAST_CONV_ALGO")
    x = _input((1, 32, 64, 64), dtype)
    w, b = _params(3, 32, 9, 9, dtype)
    assert _algorithm(x, w, [1, 1], [4, 4], "reflect") == "direct"
    with sf.backends.use("cpu"):
        y = sf.functional.padded_conv2d(x, w, b, 1, 4, padding_mode="reflect")
    expected = F.conv2d(F.pad(x.double(), (4, 4, 4, 4), mode="reflect"), w.double(), b.double())
    assert_close(y, expected, **_tolerance(dtype))
