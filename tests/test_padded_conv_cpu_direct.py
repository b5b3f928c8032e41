"""Tests specific to the direct kernel of the CPU padded convolution
(csrc/cpu/padded_conv_cpu_direct.cpp): strides 1 and 2, any number of output channels (split
into register-sized groups; channels_last outputs with whole vectors of channels take the
channels-in-lanes blocking), float32 / bfloat16 / float16. Every call here runs with
STYLIZE_FAST_CONV_ALGO=direct and first asserts that the op really picks the direct kernel, then
compares with the float64 reference F.conv2d(F.pad(x.double(), mode), w.double(), b.double(),
stride) on fresh random inputs, with the output poisoned (NaN) beforehand so that unwritten
elements show up.

Covered: the three padding modes, kernel sizes 1..9 square and rectangular, output-channel
counts 1..8 and 9, 16, 17, 20, 32, 64 with 1, 3, 5 input channels, stride 2 on odd / even /
tiny / one-row images, pad = size - 1, asymmetric and zero padding, batches, 1..33 input
channels, contiguous / channels_last / strided / sliced / permuted inputs, bias or none,
outputs large enough for the non-temporal stores, each x86 instruction-set level, determinism
across thread counts, which layers the kernel takes or refuses, and the public function on
Johnson's first, downsampling and last layers.
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
MODES = sf.ops.common.PADDING_MODE_NAMES  # name -> kernel code
FEW_OUT = 8  # output channels the kernel always takes (kFewOut)
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
LEVELS = ["default", "avx2", "avx512", "avx512_bf16"]  # avx512_bf16 runs the avx512 conv kernels
# Input layouts: make_input's three, plus views the kernel must read through their strides.
LAYOUTS = ["contiguous", "channels_last", "strided", "sliced", "permuted", "channels_last_sliced",
           "channels_last_offset"]


@pytest.fixture(autouse=True)
def _direct(monkeypatch):
    monkeypatch.setitem(sf.config.options, "conv_algo", "direct")


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


def _reference(x, w, b, padding, mode, stride=(1, 1)):
    ph, pw = padding
    xp = F.pad(x.double(), (pw, pw, ph, ph), mode="constant" if mode == "zeros" else mode)
    return F.conv2d(xp, w.double(), None if b is None else b.double(), stride=tuple(stride))


def _algorithm(x, w, stride, padding, mode):
    """The forward algorithm the CPU op picks for this call."""
    from stylize_fast.ops import padded_conv

    return padded_conv.cpu_algorithm(x, w, tuple(stride), tuple(padding), MODES[mode])


def _check(x, w, b, padding, mode, stride=(1, 1)):
    padding, stride = list(padding), list(stride)
    code = MODES[mode]
    assert _algorithm(x, w, stride, padding, mode) == "direct"
    with poisoned_outputs():
        y = ops.padded_conv2d_fwd(x, w, b, stride, padding, code)
    assert_all_written(y)
    assert y.dtype == x.dtype
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last), y.stride()
    elif x.is_contiguous():
        assert y.is_contiguous(), y.stride()
    assert_close(y, _reference(x, w, b, padding, mode, stride), **_tolerance(x.dtype))
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


@pytest.mark.parametrize("o", range(1, FEW_OUT + 1))
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


# ---------------------------------------------------------------------------------------------
# More output channels: groups of at most 8 (AVX-512) sharing the packed rows; channels_last
# outputs with whole vectors of channels take the channels-in-lanes blocking.


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("k", [5, 9])
@pytest.mark.parametrize("c", [1, 3, 5])
@pytest.mark.parametrize("o", [9, 16, 17, 32, 64])
def test_output_channel_groups(o, c, k, layout):
    # Width 53: full and partial column / pixel blocks at every vector width. The kernel takes
    # more than 8 outputs from few (<= 4) input channels with 5x5+ kernels at stride 1, and at
    # stride 2 from any number on NCHW input (float32) or any input (float16).
    stride = 1 if c <= 4 else 2
    dtype = torch.float16 if stride == 2 and layout == "channels_last" else torch.float32
    x = _input((2, c, 7, 53), dtype, layout)
    w, b = _params(o, c, k, k, dtype)
    _check(x, w, b, (k // 2, k // 2), "reflect", stride=(stride, stride))


# ---------------------------------------------------------------------------------------------
# Stride 2: each packed row split into even and odd padded columns


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("o", [3, 20])
@pytest.mark.parametrize("shape,kernel,padding", [
    pytest.param((1, 3, 9, 13), (1, 1), (0, 0), id="9x13-k1"),
    pytest.param((1, 3, 9, 13), (3, 3), (1, 1), id="9x13-k3"),
    pytest.param((1, 3, 9, 13), (9, 9), (4, 4), id="9x13-k9"),
    pytest.param((1, 3, 9, 13), (3, 5), (1, 0), id="9x13-k3x5-asym"),
    pytest.param((2, 3, 8, 8), (3, 3), (1, 1), id="8x8-k3"),
    pytest.param((2, 3, 8, 8), (4, 4), (1, 2), id="8x8-k4"),
    pytest.param((1, 3, 8, 8), (3, 3), (0, 0), id="8x8-pad0"),
    pytest.param((1, 2, 5, 6), (3, 3), (4, 5), id="5x6-pad=size-1"),
    pytest.param((1, 2, 5, 6), (9, 9), (4, 5), id="5x6-k9-pad=size-1"),
    pytest.param((1, 2, 5, 6), (1, 1), (1, 1), id="5x6-k1-pad1"),
    pytest.param((2, 4, 1, 40), (1, 3), (0, 1), id="one-row"),
    pytest.param((2, 4, 40, 1), (3, 1), (1, 0), id="one-column"),
    pytest.param((1, 2, 4, 5), (9, 9), (3, 4), id="kernel-larger-than-image"),
    pytest.param((1, 2, 6, 6), (6, 6), (0, 0), id="1x1-output"),
])
def test_stride2_geometry(mode, o, shape, kernel, padding):
    ph, pw = padding
    if mode == "reflect" and (ph >= shape[2] or pw >= shape[3]):
        pytest.skip("reflect padding must be smaller than the input")
    x = _input(shape)
    w, b = _params(o, shape[1], *kernel)
    _check(x, w, b, padding, mode, stride=(2, 2))


@pytest.mark.parametrize("pad", [0, 1, 4])
@pytest.mark.parametrize("width", [70, 71])
@pytest.mark.parametrize("k", [1, 3, 9])
def test_stride2_wide_rows(k, width, pad):
    # Rows of 70-71 columns: the image columns go through the vector even / odd split, from an
    # even or odd first padded column; 20 outputs in groups, 16 in one.
    if k == 1 and pad == 4:
        pytest.skip("pad beyond the kernel")
    for o in (16, 20):
        x = _input((2, 5, 9, width))
        w, b = _params(o, 5, k, k)
        _check(x, w, b, (pad, pad), "reflect", stride=(2, 2))


def _stride2_case(dtype, layout):
    """Input channels for a stride-2 layer with more than 8 outputs the kernel takes: float32
    NCHW and float16 any; float32 channels_last and bfloat16 from few (<= 4) input channels."""
    few = dtype == torch.bfloat16 or (dtype == torch.float32 and layout.startswith("channels"))
    return 3 if few else 20


@pytest.mark.parametrize("o", [17, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_stride2_layouts_and_dtypes(dtype, layout, o):
    # 20 input channels: channels_last rows packed through transposed tiles, then split.
    c = _stride2_case(dtype, layout)
    x = _input((2, c, 9, 45), dtype, layout)
    w, b = _params(o, c, 3, 3, dtype)
    _check(x, w, b, (1, 1), "reflect", stride=(2, 2))


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("c", [16, 33])
def test_stride2_channels_last_float16(mode, c):
    # Transposed packing of 16 and 33 (16 + 16 + 1) channels, split into even / odd columns,
    # and the channels-in-lanes outputs (32 and 64 channels) at stride 2.
    x = _input((2, c, 11, 37), torch.float16, "channels_last")
    for o in (32, 64):
        w, b = _params(o, c, 3, 3, torch.float16)
        _check(x, w, b, (1, 1), mode, stride=(2, 2))


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", ["groups-s1", "groups-s2", "few-s2"])
def test_batch_and_bias_groups_stride2(n, bias, case):
    # Tasks that start mid-image restart the ring (two rows per output row at stride 2).
    c, o, k, stride = {"groups-s1": (3, 32, 5, 1), "groups-s2": (8, 17, 3, 2),
                       "few-s2": (6, 4, 5, 2)}[case]
    x = _input((n, c, 13, 29))
    w, b = _params(o, c, k, k, bias=bias)
    _check(x, w, b, (k // 2, k // 2), "reflect", stride=(stride, stride))


@pytest.mark.parametrize("case", ["rows-f32", "lanes-f32", "rows-bf16", "lanes-f16",
                                  "stride2-f32", "stride2-lanes-f16"])
def test_streaming_outputs(case):
    # Outputs of 4 MiB or more are written with non-temporal stores (whole cache lines only).
    shape, o, k, stride, dtype, layout = {
        "rows-f32": ((1, 3, 130, 130), 64, 5, 1, torch.float32, "contiguous"),
        "lanes-f32": ((1, 3, 130, 130), 64, 5, 1, torch.float32, "channels_last"),
        "rows-bf16": ((1, 1, 182, 182), 64, 5, 1, torch.bfloat16, "contiguous"),
        "lanes-f16": ((1, 3, 182, 182), 64, 5, 1, torch.float16, "channels_last"),
        "stride2-f32": ((1, 8, 260, 260), 64, 3, 2, torch.float32, "contiguous"),
        "stride2-lanes-f16": ((1, 8, 364, 364), 64, 3, 2, torch.float16, "channels_last"),
    }[case]
    x = _input(shape, dtype, layout)
    w, b = _params(o, shape[1], k, k, dtype)
    p = k // 2
    y = _check(x, w, b, (p, p), "reflect", stride=(stride, stride))
    assert y.numel() * y.element_size() >= 4 << 20


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
    monkeypatch.setitem(sf.config.options, "cpu_isa", None)
    best = ops.instance_norm_cpu_isa()
    return LEVELS[: LEVELS.index(best) + 1] if best in LEVELS else [best]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_each_instruction_set(level, dtype, layout, monkeypatch):
    if level not in _supported_levels(monkeypatch):
        pytest.skip(f"this CPU does not run {level}")
    monkeypatch.setitem(sf.config.options, "cpu_isa", level)
    assert ops.instance_norm_cpu_isa() == level
    # bfloat16 channels_last stays with the library above 6 outputs (see test_choice_rule).
    top = 6 if dtype == torch.bfloat16 and layout == "channels_last" else FEW_OUT
    for o, k in ((1, 3), (3, 9), (top, 5)):
        x = _input((2, 20, 7, 45), dtype, layout)
        w, b = _params(o, 20, k, k + 2 if k < 9 else k, dtype)
        _check(x, w, b, (k // 2, k // 2 + (1 if k < 9 else 0)), "reflect")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_each_instruction_set_groups_and_stride2(level, dtype, layout, monkeypatch):
    if level not in _supported_levels(monkeypatch):
        pytest.skip(f"this CPU does not run {level}")
    monkeypatch.setitem(sf.config.options, "cpu_isa", level)
    assert ops.instance_norm_cpu_isa() == level
    # Groups at stride 1 (bfloat16: from one input channel), channels-in-lanes (32, 64
    # channels_last outputs; the vector width differs per level), stride 2 with few and with
    # 20 input channels where the kernel takes them (see _stride2_case).
    c1 = 1 if dtype == torch.bfloat16 else 3
    cases = [(c1, 17, 9, 1), (c1, 32, 5, 1), (c1, 64, 7, 1), (3, 5, 3, 2), (3, 24, 9, 2),
             (_stride2_case(dtype, layout), 32, 3, 2)]
    for c, o, k, s in cases:
        x = _input((2, c, 9, 45), dtype, layout)
        w, b = _params(o, c, k, k, dtype)
        _check(x, w, b, (k // 2, k // 2), "reflect", stride=(s, s))


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


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", ["groups", "stride2"])
def test_same_result_for_any_thread_count_groups_stride2(case, layout):
    c, o, k, s = (3, 40, 9, 1) if case == "groups" else (16, 24, 3, 2)
    dtype = torch.float32 if case == "groups" or layout == "contiguous" else torch.float16
    x = _input((2, c, 40, 70), dtype, layout)
    w, b = _params(o, c, k, k, dtype)
    p = k // 2
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.padded_conv2d_fwd(x, w, b, [s, s], [p, p], MODES["reflect"])
        torch.set_num_threads(3)
        many = ops.padded_conv2d_fwd(x, w, b, [s, s], [p, p], MODES["reflect"])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    assert_close(many, _reference(x, w, b, (p, p), "reflect", (s, s)), **_tolerance(dtype))


# ---------------------------------------------------------------------------------------------
# Which layers take the kernel


@pytest.mark.parametrize("case", [
    pytest.param(((1, 4, 12, 12), 3, 5, 1, torch.float64, "contiguous"), id="float64"),
    pytest.param(((1, 4, 12, 12), 3, 5, 3, torch.float32, "contiguous"), id="stride3"),
    pytest.param(((1, 16, 12, 12), 32, 5, 1, torch.float32, "contiguous"), id="many-outputs"),
    pytest.param(((1, 16, 12, 12), 32, 3, 2, torch.float32, "channels_last"),
                 id="stride2-cl-many-inputs"),
    pytest.param(((1, 3, 12, 12), 32, 9, 1, torch.bfloat16, "contiguous"),
                 id="bf16-many-outputs"),
    pytest.param(((1, 16, 12, 12), 32, 3, 2, torch.bfloat16, "contiguous"),
                 id="bf16-stride2-many-inputs"),
    pytest.param(((1, 3, 12, 12), 300, 3, 1, torch.float32, "contiguous"),
                 id="over-256-outputs"),
])
def test_refused_layers_stay_on_the_library(case, monkeypatch):
    shape, o, k, s, dtype, layout = case
    x = _input(shape, dtype, layout)
    w, b = _params(o, shape[1], k, k, dtype)
    p = [k // 2, k // 2]
    monkeypatch.setitem(sf.config.options, "conv_algo", None)
    assert _algorithm(x, w, [s, s], p, "reflect") == "library"
    monkeypatch.setitem(sf.config.options, "conv_algo", "direct")
    with pytest.raises(RuntimeError, match="direct kernel does not handle"):
        ops.padded_conv2d_fwd(x, w, b, [s, s], p, MODES["reflect"])


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
    monkeypatch.setitem(sf.config.options, "conv_algo", None)
    x = _input(shape, dtype, layout)
    w, _ = _params(o, shape[1], k, k, dtype)
    assert _algorithm(x, w, [1, 1], [k // 2, k // 2], "reflect") == expected


@pytest.mark.parametrize("case,expected", [
    # Johnson's first layer, 9x9 3 -> 32 at stride 1 (the automatic choice reads the shape
    # only; a small image stands for the 256^2 / 512^2 ones measured).
    pytest.param(((1, 3, 64, 64), 32, 9, 1, torch.float32, "contiguous"), "direct",
                 id="first-f32"),
    pytest.param(((1, 3, 64, 64), 32, 9, 1, torch.float32, "channels_last"), "direct",
                 id="first-f32-cl"),
    pytest.param(((1, 3, 64, 64), 32, 9, 1, torch.bfloat16, "contiguous"), "library",
                 id="first-bf16"),
    pytest.param(((1, 3, 64, 64), 32, 9, 1, torch.float16, "channels_last"), "direct",
                 id="first-f16-cl"),
    pytest.param(((1, 1, 64, 64), 32, 9, 1, torch.bfloat16, "channels_last"), "direct",
                 id="one-input-bf16-cl"),
    # The downsampling convolutions, 3x3 at stride 2: NCHW float32 takes the kernel, the
    # library's channels_last and bfloat16 kernels keep up.
    pytest.param(((4, 32, 64, 64), 64, 3, 2, torch.float32, "contiguous"), "direct",
                 id="down-f32"),
    pytest.param(((1, 64, 64, 64), 128, 3, 2, torch.float32, "contiguous"), "direct",
                 id="down2-f32"),
    pytest.param(((4, 32, 64, 64), 64, 3, 2, torch.float32, "channels_last"), "library",
                 id="down-f32-cl"),
    pytest.param(((4, 32, 64, 64), 64, 3, 2, torch.bfloat16, "contiguous"), "library",
                 id="down-bf16"),
    pytest.param(((4, 32, 64, 64), 64, 3, 2, torch.float16, "channels_last"), "direct",
                 id="down-f16-cl"),
    pytest.param(((1, 3, 64, 64), 32, 3, 2, torch.float32, "channels_last"), "direct",
                 id="down-few-inputs-cl"),
    pytest.param(((1, 3, 64, 64), 32, 3, 2, torch.bfloat16, "channels_last"), "direct",
                 id="down-few-inputs-bf16-cl"),
    pytest.param(((1, 32, 64, 64), 3, 9, 2, torch.bfloat16, "channels_last"), "direct",
                 id="few-outputs-s2-bf16-cl"),
    # More outputs from more inputs at stride 1 stay with the library, 3x3 with Winograd.
    pytest.param(((1, 8, 64, 64), 32, 9, 1, torch.float32, "contiguous"), "library",
                 id="eight-inputs"),
    pytest.param(((1, 128, 128, 128), 128, 3, 1, torch.float32, "channels_last"), "winograd",
                 id="residual-cl-winograd"),
    pytest.param(((1, 64, 64, 64), 32, 3, 1, torch.float32, "channels_last"), "winograd",
                 id="upsample-cl-winograd"),
    pytest.param(((1, 3, 64, 64), 32, 1, 1, torch.float32, "channels_last"), "library",
                 id="1x1-many-outputs-cl"),
])
def test_choice_rule_groups_and_stride2(case, expected, monkeypatch):
    shape, o, k, s, dtype, layout = case
    monkeypatch.setitem(sf.config.options, "conv_algo", None)
    x = _input(shape, dtype, layout)
    w, _ = _params(o, shape[1], k, k, dtype)
    assert _algorithm(x, w, [s, s], [k // 2, k // 2], "reflect") == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_public_function_johnson_layer(dtype, monkeypatch):
    # The generator's last layer through sf.functional on the cpu backend (algorithm chosen
    # automatically), against the eager F.pad + F.conv2d in float64.
    monkeypatch.setitem(sf.config.options, "conv_algo", None)
    x = _input((1, 32, 64, 64), dtype)
    w, b = _params(3, 32, 9, 9, dtype)
    assert _algorithm(x, w, [1, 1], [4, 4], "reflect") == "direct"
    with sf.backends.use("cpu"):
        y = sf.functional.padded_conv2d(x, w, b, 1, 4, padding_mode="reflect")
    expected = F.conv2d(F.pad(x.double(), (4, 4, 4, 4), mode="reflect"), w.double(), b.double())
    assert_close(y, expected, **_tolerance(dtype))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", ["first", "downsample"])
def test_public_function_generator_layers(case, layout, monkeypatch):
    # Johnson's first layer and a downsampling layer through sf.functional on the cpu backend
    # (algorithm chosen automatically), against the eager F.pad + F.conv2d in float64.
    monkeypatch.setitem(sf.config.options, "conv_algo", None)
    shape, o, k, s = ((1, 3, 48, 40), 32, 9, 1) if case == "first" else ((2, 32, 24, 20), 64, 3, 2)
    x = _input(shape, torch.float32, layout)
    w, b = _params(o, shape[1], k, k)
    p = k // 2
    expected_algorithm = "library" if case == "downsample" and layout == "channels_last" \
        else "direct"
    assert _algorithm(x, w, [s, s], [p, p], "reflect") == expected_algorithm
    with sf.backends.use("cpu"):
        y = sf.functional.padded_conv2d(x, w, b, s, p, padding_mode="reflect")
    expected = F.conv2d(F.pad(x.double(), (p, p, p, p), mode="reflect"), w.double(), b.double(),
                        stride=s)
    assert_close(y, expected, **tolerance(torch.float32))


# ---------------------------------------------------------------------------------------------
# Backward: the input gradient of a stride-1 layer is a convolution of grad_output with the
# flipped, transposed weight; where that convolution suits the direct kernel it runs there.


@pytest.mark.parametrize("mode", ["reflect", "replicate", "zeros"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels,out_channels,k", [(32, 3, 9), (3, 32, 9), (5, 2, 3)])
def test_backward_input_gradient_runs_direct(monkeypatch, mode, layout, dtype, channels,
                                             out_channels, k):
    from stylize_fast.ops import padded_conv

    if dtype == torch.bfloat16 and out_channels == 3 and channels == 32:
        pytest.skip("the input gradient is a bfloat16 3 -> 32 conv: the library's (direct rule)")
    pad = k // 2
    x = make_input((2, channels, 13, 11), dtype, layout, requires_grad=True)
    g = torch.Generator().manual_seed(5)
    w = (torch.randn(out_channels, channels, k, k, generator=g, dtype=torch.float64)
         * (channels * k * k) ** -0.5).to(dtype).requires_grad_(True)
    b = torch.randn(out_channels, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    monkeypatch.setitem(sf.config.options, "conv_algo", None)  # the forward: automatic choice
    y = ops.padded_conv2d_fwd(x, w, b, [1, 1], [pad, pad], MODES[mode])
    monkeypatch.setitem(sf.config.options, "conv_algo", "direct")  # read when the backward runs
    assert padded_conv.cpu_algorithm(x, w, (1, 1), (pad, pad), MODES[mode],
                                     input_grad=True) == "direct"
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    expected = _reference(x64, w64, b64, [pad, pad], mode)
    gy = torch.randn(expected.shape, dtype=torch.float64).to(dtype)
    with poisoned_outputs():
        grads = torch.autograd.grad(y, (x, w, b), gy)
    expected_grads = torch.autograd.grad(expected, (x64, w64, b64), gy.double())
    atol, rtol = (1e-5, 1e-4) if dtype == torch.float32 else (2e-2, 2.0**-7)
    for name, got, want in zip(("input", "weight", "bias"), grads, expected_grads):
        assert_all_written(got, name=f"grad_{name}")
        assert_close(got, want, atol=atol * want.abs().max().item(), rtol=rtol, name=f"grad_{name}")
