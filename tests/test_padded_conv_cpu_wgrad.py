"""Tests specific to the weight-gradient kernels of the CPU padded convolution.

The direct kernel (csrc/cpu/padded_conv_cpu_wgrad.cpp): few output channels (1..8, and 9..16
where it pays), kernels of 3x3 and up, stride 1 or 2, float32 / bfloat16 / float16, reading the
unpadded input through the padding index map. Every case first asserts that the backward really
runs the kernel (``cpu_algorithm(..., weight_grad=True) == "direct"``), then compares grad_weight
and grad_bias with the float64 reference (the backward of F.conv2d(F.pad(x, mode), w) on the
same rounded inputs), outputs poisoned (NaN) beforehand.

Covered: the three padding modes, kernels 3x3 / 5x5 / 9x9 and rectangular, pad = size - 1,
strides 1 and 2, odd sizes, batches 1 and 3, 1..33 input channels (partial vectors of channels),
every output-channel count the kernel takes, contiguous / channels_last / strided / permuted
inputs and gradients, each x86 instruction-set level, bit-identical results across runs and
thread counts, the output masks, the environment override, and which layers it takes.

The Winograd F(4x4, 3x3) weight gradient (csrc/cpu/padded_conv_cpu_wgrad_winograd.cpp, 3x3
stride 1, float32 / bfloat16): the same checks ("winograd" asserted, forced through conv_algo on
layers too small for the automatic choice), plus tile remainders, paddings 0-2, several tasks
and chunks, and a 5% perturbation the tolerance must catch.
Generic backend-parametrised tests live in test_padded_conv.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import stylize_fast as sf
from stylize_fast.ops import padded_conv
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    assert_half_close,
    make_input,
    poisoned_outputs,
    pytorch_padded_conv2d_grads,
)

pytestmark = pytest.mark.skipif(not sf.backends.available()["cpu"],
                                reason="C++ extension not built")

ops = torch.ops.stylize_fast
MODES = sf.ops.common.PADDING_MODE_NAMES  # name -> kernel code
MAX_OUT = 8  # kWgradMaxOut
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
LEVELS = ["default", "avx2", "avx512"]


@pytest.fixture(autouse=True)
def _automatic(monkeypatch):
    monkeypatch.setitem(sf.config.options, "conv_algo", None)


def _input(shape, dtype, layout, seed=0):
    n, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    if layout == "permuted":  # H and W swapped in memory
        return make_input((n, c, w, h), dtype, generator=g).transpose(2, 3)
    return make_input(shape, dtype, layout, generator=g)


def _grads(x, w, gy, stride, padding, mode, mask=(False, True, True)):
    """(grad_weight, grad_bias) of the op and of the float64 reference, on the same inputs."""
    stride = [stride, stride] if isinstance(stride, int) else list(stride)
    padding = list(padding)
    assert padded_conv.cpu_algorithm(x, w, tuple(stride), tuple(padding), MODES[mode],
                                     weight_grad=True) == "direct"
    with poisoned_outputs():
        _, gw, gb = ops.padded_conv2d_bwd(gy, x, w, stride, padding, MODES[mode], list(mask))
    ph, pw = padding
    xp = F.pad(x.double(), (pw, pw, ph, ph), mode="constant" if mode == "zeros" else mode)
    _, rw, rb = torch.ops.aten.convolution_backward(
        gy.double(), xp, w.double(), [w.shape[0]], stride, [0, 0], [1, 1], False, [0, 0], 1,
        [False, True, True])
    return gw, gb, rw, rb


def _check(x, w, gy, stride, padding, mode):
    gw, gb, rw, rb = _grads(x, w, gy, stride, padding, mode)
    # Float32 products summed in float32 per output row, then in float64: a few ulps of the
    # largest value; half dtypes add the one rounding of the result.
    rtol = {torch.float32: 1e-5, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-10}[x.dtype]
    for name, got, want in (("grad_weight", gw, rw), ("grad_bias", gb, rb)):
        assert_all_written(got, name=name)
        assert got.dtype == x.dtype and got.shape == want.shape and got.is_contiguous()
        assert_close(got, want, atol=1e-5 * want.abs().max().item(), rtol=rtol, name=name)


def _case(shape, o, k, stride=1, dtype=torch.float32, layout="contiguous", seed=0):
    n, c, h, wd = shape
    kh, kw = (k, k) if isinstance(k, int) else k
    g = torch.Generator().manual_seed(seed + 1)
    w = (torch.randn(o, c, kh, kw, generator=g, dtype=torch.float64)
         * (c * kh * kw) ** -0.5).to(dtype)
    x = _input(shape, dtype, layout, seed)
    return x, w, g


def _grad_output(x, w, stride, padding, layout, g):
    n, _, h, wd = x.shape
    ho = (h + 2 * padding[0] - w.shape[2]) // stride + 1
    wo = (wd + 2 * padding[1] - w.shape[3]) // stride + 1
    gy = torch.randn(n, w.shape[0], ho, wo, generator=g, dtype=torch.float64).to(x.dtype)
    if layout == "channels_last":
        gy = gy.contiguous(memory_format=torch.channels_last)
    elif layout in ("strided", "permuted"):
        gy = torch.randn(n, w.shape[0], ho, 2 * wo, generator=g).to(x.dtype)[..., ::2]
    return gy


# ---------------------------------------------------------------------------------------------
# Geometry


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kernel", [3, 5, 9, (3, 5), (9, 3)], ids=str)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_modes_kernels_strides(mode, kernel, stride, layout):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = (kh // 2, kw // 2)
    x, w, g = _case((2, 5, 13, 11), 3, kernel, stride, layout=layout)
    _check(x, w, _grad_output(x, w, stride, padding, layout, g), stride, padding, mode)


@pytest.mark.parametrize("o", range(1, MAX_OUT + 1))
@pytest.mark.parametrize("c", [1, 7, 16, 33])
def test_output_and_input_channels(o, c):
    # 33 channels: two full vectors and a partial one at every vector width.
    x, w, g = _case((1, c, 9, 21), o, 3)
    _check(x, w, _grad_output(x, w, 1, (1, 1), "contiguous", g), 1, (1, 1), "reflect")


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("shape,k,pad", [
    pytest.param((1, 4, 5, 6), 9, (4, 4), id="pad-exceeds-half"),
    pytest.param((1, 4, 3, 4), 3, (2, 3), id="pad-size-minus-1"),
    pytest.param((3, 6, 1, 9), (1, 9), (0, 4), id="one-row"),
    pytest.param((1, 3, 40, 3), 3, (1, 2), id="narrow"),
    pytest.param((2, 32, 37, 29), 9, (4, 4), id="johnson-last-odd"),
])
def test_borders(mode, shape, k, pad):
    x, w, g = _case(shape, 3, k)
    _check(x, w, _grad_output(x, w, 1, pad, "contiguous", g), 1, pad, mode)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "permuted"])
def test_dtypes_and_layouts(dtype, layout):
    x, w, g = _case((2, 20, 16, 19), 3, 9, dtype=dtype, layout=layout)
    _check(x, w, _grad_output(x, w, 1, (4, 4), layout, g), 1, (4, 4), "reflect")


@pytest.mark.parametrize("o,c,k,stride", [
    (9, 16, 3, 1), (12, 33, 3, 1), (10, 20, 3, 1),     # 3x3 stride 1: 9-12 outputs
    (13, 16, 5, 1), (16, 19, 5, 2), (16, 17, (9, 5), 1), (14, 16, 9, 2),  # larger kernels
], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_nine_to_sixteen_outputs(o, c, k, stride, layout):
    # Output channels in groups of at most 6 past 8 (groups 5 + 5 ... and remainders).
    kh, kw = (k, k) if isinstance(k, int) else k
    pad = (kh // 2, kw // 2)
    x, w, g = _case((2, c, 13, 15), o, k, stride, layout=layout, seed=o)
    _check(x, w, _grad_output(x, w, stride, pad, layout, g), stride, pad, "reflect")


def test_many_rows_several_tasks_per_sample():
    # 150 output rows: more than one task per sample, the last one partial.
    x, w, g = _case((1, 8, 150, 40), 2, 3, layout="channels_last")
    _check(x, w, _grad_output(x, w, 1, (1, 1), "channels_last", g), 1, (1, 1), "reflect")


# ---------------------------------------------------------------------------------------------
# Instruction-set levels, determinism


def _supported_levels(monkeypatch):
    monkeypatch.setitem(sf.config.options, "cpu_isa", None)
    best = ops.instance_norm_cpu_isa()
    return LEVELS[: LEVELS.index(best) + 1] if best in LEVELS else LEVELS


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("o,k,stride", [(3, 9, 1), (8, 3, 2), (5, 5, 1), (11, 3, 1), (16, 5, 2)])
def test_each_instruction_set(level, dtype, o, k, stride, monkeypatch):
    if level not in _supported_levels(monkeypatch):
        pytest.skip(f"this CPU does not run {level}")
    monkeypatch.setitem(sf.config.options, "cpu_isa", level)
    x, w, g = _case((2, 19, 15, 23), o, k, stride, dtype, "channels_last")
    pad = (k // 2, k // 2)
    _check(x, w, _grad_output(x, w, stride, pad, "channels_last", g), stride, pad, "reflect")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_bit_identical_across_runs_and_threads(layout):
    x, w, g = _case((2, 16, 70, 33), 3, 9, layout=layout)
    gy = _grad_output(x, w, 1, (4, 4), layout, g)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 3, 2, 2):
            torch.set_num_threads(t)
            results.append(ops.padded_conv2d_bwd(gy, x, w, [1, 1], [4, 4], 1,
                                                 [False, True, True]))
    finally:
        torch.set_num_threads(threads)
    for r in results[1:]:
        assert torch.equal(r[1], results[0][1]) and torch.equal(r[2], results[0][2])


# ---------------------------------------------------------------------------------------------
# Masks, autograd, choice


@pytest.mark.parametrize("mask", [(False, True, False), (True, True, True), (True, True, False)],
                         ids=str)
@pytest.mark.parametrize("stride", [1, 2])  # input gradient: direct kernel / library
def test_output_masks(mask, stride):
    x, w, g = _case((1, 12, 17, 15), 3, 9, layout="channels_last")
    gy = _grad_output(x, w, stride, (4, 4), "channels_last", g)
    with poisoned_outputs():
        gi, gw, gb = ops.padded_conv2d_bwd(gy, x, w, [stride, stride], [4, 4], 1, list(mask))
    _, _, rw, rb = _grads(x, w, gy, (stride, stride), (4, 4), "reflect")
    assert_close(gw, rw, atol=1e-5 * rw.abs().max().item(), rtol=1e-5)
    assert gb.numel() == (3 if mask[2] else 0)
    if mask[2]:
        assert_close(gb, rb, atol=1e-5 * rb.abs().max().item(), rtol=1e-5)
    if mask[0]:  # the input gradient is unaffected by who computes the weight gradient
        xd = x.detach().double().requires_grad_(True)
        y = F.conv2d(F.pad(xd, (4, 4, 4, 4), mode="reflect"), w.double(), stride=stride)
        (want,) = torch.autograd.grad(y, xd, gy.double())
        assert_close(gi, want, atol=1e-5 * want.abs().max().item(), rtol=1e-4)


def test_public_function_backward_on_johnsons_last_layer():
    # sf.functional.padded_conv2d with autograd, channels_last as JohnsonNet(norm="fused") runs.
    x = make_input((1, 32, 40, 36), torch.float32, "channels_last", requires_grad=True)
    g = torch.Generator().manual_seed(3)
    w = (torch.randn(3, 32, 9, 9, generator=g) * 0.02).requires_grad_(True)
    b = torch.randn(3, generator=g).requires_grad_(True)
    assert padded_conv.cpu_algorithm(x, w, (1, 1), (4, 4), 1, weight_grad=True) == "direct"
    with sf.backends.use("cpu"):
        y = sf.functional.padded_conv2d(x, w, b, 1, 4, padding_mode="reflect")
    gy = torch.randn(y.shape, generator=g)
    got = torch.autograd.grad(y, (x, w, b), gy)
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    ref = F.conv2d(F.pad(x64, (4, 4, 4, 4), mode="reflect"), w64, b64)
    want = torch.autograd.grad(ref, (x64, w64, b64), gy.double())
    for name, a, e in zip(("input", "weight", "bias"), got, want):
        assert_close(a, e, atol=1e-5 * e.abs().max().item(), rtol=1e-4, name=f"grad_{name}")


@pytest.mark.parametrize("forced,expected", [("library", "library"), ("winograd", "winograd"),
                                             ("direct", "direct"), ("auto", "direct")])
def test_environment_override(forced, expected, monkeypatch):
    monkeypatch.setitem(sf.config.options, "conv_algo", forced)
    x, w, g = _case((1, 6, 12, 10), 3, 3)
    assert padded_conv.cpu_algorithm(x, w, (1, 1), (1, 1), 1, weight_grad=True) == expected
    gy = _grad_output(x, w, 1, (1, 1), "contiguous", g)
    _, gw, _ = ops.padded_conv2d_bwd(gy, x, w, [1, 1], [1, 1], 1, [False, True, False])
    xp = F.pad(x.double(), (1, 1, 1, 1), mode="reflect")
    want = torch.ops.aten.convolution_backward(gy.double(), xp, w.double(), None, [1, 1], [0, 0],
                                               [1, 1], False, [0, 0], 1, [False, True, False])[1]
    assert_close(gw, want, atol=1e-5 * want.abs().max().item(), rtol=1e-5)


@pytest.mark.parametrize("o,k,stride,dtype,expected", [
    (3, 9, 1, torch.float32, "direct"),
    (8, 3, 2, torch.bfloat16, "direct"),
    (1, 5, 1, torch.float16, "direct"),
    (9, 3, 1, torch.float32, "library"),   # 9-16 outputs: from 16 inputs only
    (17, 9, 1, torch.float32, "library"),  # more outputs: the library's rate is fine
    (3, 1, 1, torch.float32, "library"),   # 1x1: one GEMM for the library
    (3, 3, 3, torch.float32, "library"),   # stride 3: not handled
    (3, 3, 1, torch.float64, "library"),   # float64: the kernel computes in float32
])
def test_which_layers_it_takes(o, k, stride, dtype, expected):
    # 8 input channels here.
    x = torch.empty(1, 8, 20, 20, dtype=dtype)
    w = torch.empty(o, 8, k, k, dtype=dtype)
    assert padded_conv.cpu_algorithm(x, w, (stride, stride), (k // 2, k // 2), 1,
                                     weight_grad=True) == expected


@pytest.mark.parametrize("o,c,k,stride,expected", [
    (12, 16, 3, 1, "direct"),
    (9, 64, 3, 1, "direct"),
    (13, 16, 3, 1, "library"),   # 3x3 with 13-16 outputs: the library is as fast
    (12, 16, 3, 2, "library"),   # 3x3 stride 2: a tie
    (12, 15, 3, 1, "library"),   # fewer than 16 inputs: the kernel is slower there
    (16, 16, 5, 1, "direct"),
    (16, 32, 9, 2, "direct"),
])
def test_which_layers_with_nine_to_sixteen_outputs(o, c, k, stride, expected):
    x = torch.empty(1, c, 20, 20).contiguous(memory_format=torch.channels_last)
    w = torch.empty(o, c, k, k)
    assert padded_conv.cpu_algorithm(x, w, (stride, stride), (k // 2, k // 2), 1,
                                     weight_grad=True) == expected


def test_algorithm_query_rejects_both_gradients():
    x, w = torch.empty(1, 8, 20, 20), torch.empty(3, 8, 3, 3)
    with pytest.raises(ValueError, match="input_grad or weight_grad"):
        padded_conv.cpu_algorithm(x, w, (1, 1), (1, 1), 1, input_grad=True, weight_grad=True)
    with pytest.raises(RuntimeError, match="input_grad or weight_grad"):
        ops.padded_conv2d_cpu_algorithm([1, 8, 20, 20], [3, 8, 3, 3], torch.float32, False,
                                        [1, 1], [1, 1], 1, True, True)


# ---------------------------------------------------------------------------------------------
# Winograd weight gradient (csrc/cpu/padded_conv_cpu_wgrad_winograd.cpp): 3x3 stride-1 layers,
# float32 / bfloat16. conv_algo=winograd forces it on layers the automatic choice leaves to the
# direct kernel or the library (few channels); the float64 reference as above.

WINOGRAD_DTYPES = [torch.float32, torch.bfloat16]


def _winograd_case(shape, o, dtype=torch.float32, layout="channels_last", padding=(1, 1),
                   seed=0):
    x, w, g = _case(shape, o, 3, 1, dtype, layout, seed)
    return x, w, _grad_output(x, w, 1, padding, layout, g)


def _winograd_grads(x, w, gy, padding, mode, mask=(False, True, True), forced="winograd"):
    with sf.config.override(conv_algo=forced):
        assert padded_conv.cpu_algorithm(x, w, (1, 1), padding, MODES[mode],
                                         weight_grad=True) == "winograd"
        with poisoned_outputs():
            got = ops.padded_conv2d_bwd(gy, x, w, [1, 1], list(padding), MODES[mode], list(mask))
    ph, pw = padding
    xp = F.pad(x.double(), (pw, pw, ph, ph), mode="constant" if mode == "zeros" else mode)
    want = torch.ops.aten.convolution_backward(
        gy.double(), xp, w.double(), [w.shape[0]], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
        [False, True, True])
    return got, want


def _winograd_close(got, want, x, w, gy, padding, mode, name="grad_weight"):
    """float32: a few ulps of the largest value for the transforms (constants up to 8 and 1/24)
    and the float32 sums; bfloat16: the half-precision rule against PyTorch's own bfloat16 op."""
    assert_all_written(got, name=name)
    assert got.dtype == x.dtype and got.shape == want.shape and got.is_contiguous()
    if x.dtype == torch.bfloat16:
        _, (_, torch_gw, _) = pytorch_padded_conv2d_grads(x, w, None, 1, padding, mode, gy)
        n, _, ho, wo = gy.shape
        assert_half_close(got, want, terms=n * ho * wo, baseline=torch_gw, name=name)
    else:
        assert_close(got, want, atol=2e-5 * want.abs().max().item(), rtol=1e-4, name=name)


def _winograd_check(x, w, gy, padding, mode):
    (_, gw, gb), (_, rw, rb) = _winograd_grads(x, w, gy, padding, mode)
    _winograd_close(gw, rw, x, w, gy, padding, mode)
    assert_close(gb.double(), rb, atol=1e-5 * rb.abs().max().item(), rtol=2.0**-8,
                 name="grad_bias")


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", WINOGRAD_DTYPES, ids=str)
@pytest.mark.parametrize("shape,o", [
    pytest.param((2, 19, 13, 11), 21, id="odd-tile-remainders"),
    pytest.param((3, 33, 8, 9), 35, id="partial-vectors"),
    pytest.param((1, 16, 4, 4), 16, id="one-tile"),
])
def test_winograd_modes_layouts_dtypes(mode, layout, dtype, shape, o):
    x, w, gy = _winograd_case(shape, o, dtype, layout)
    _winograd_check(x, w, gy, (1, 1), mode)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("padding", [(0, 0), (2, 2), (0, 1), (2, 0)], ids=str)
def test_winograd_paddings(mode, padding):
    # Tiles reading past the padded input, and outputs larger / smaller than the input.
    x, w, gy = _winograd_case((2, 7, 10, 9), 5, padding=padding, layout="contiguous")
    _winograd_check(x, w, gy, padding, mode)


@pytest.mark.parametrize("c,o", [(1, 1), (3, 40), (40, 3), (17, 97), (130, 6)], ids=str)
def test_winograd_channel_counts(c, o):
    # Output channels: micro-kernel remainders at every level (6 or 2 rows); input channels:
    # 1-4 vectors of 16 and partial ones.
    x, w, gy = _winograd_case((2, c, 9, 7), o, seed=c + o)
    _winograd_check(x, w, gy, (1, 1), "reflect")


@pytest.mark.parametrize("layout", ["strided", "permuted"])
def test_winograd_strided_inputs(layout):
    x, w, gy = _winograd_case((2, 12, 11, 14), 10, layout=layout)
    _winograd_check(x, w, gy, (1, 1), "replicate")


def test_winograd_many_tasks_and_chunks():
    # 729 tiles of 128 -> 128 channels: 4 tasks (the sums' memory allows 7, rounded down to a
    # multiple of 4) of 183 tiles, each summing 6 chunks of 32 tiles, the last partial; the
    # automatic choice takes it.
    x, w, gy = _winograd_case((1, 128, 108, 108), 128)
    (_, gw, _), (_, rw, _) = _winograd_grads(x, w, gy, (1, 1), "reflect", forced=None)
    _winograd_close(gw, rw, x, w, gy, (1, 1), "reflect")


def test_winograd_error_below_a_five_percent_perturbation():
    # The check above fails a result 5% off in one element, and one 5% off in a 3x3 tap.
    x, w, gy = _winograd_case((2, 24, 12, 10), 20)
    (_, gw, _), (_, rw, _) = _winograd_grads(x, w, gy, (1, 1), "reflect")
    _winograd_close(gw, rw, x, w, gy, (1, 1), "reflect")
    i = rw.abs().argmax()
    wrong = gw.clone()
    wrong.view(-1)[i] *= 1.05
    with pytest.raises(AssertionError):
        _winograd_close(wrong, rw, x, w, gy, (1, 1), "reflect")
    wrong = gw.clone()
    wrong[:, :, 1, 2] *= 0.95
    with pytest.raises(AssertionError):
        _winograd_close(wrong, rw, x, w, gy, (1, 1), "reflect")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", WINOGRAD_DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_winograd_each_instruction_set(level, dtype, layout, monkeypatch):
    if level not in _supported_levels(monkeypatch):
        pytest.skip(f"this CPU does not run {level}")
    monkeypatch.setitem(sf.config.options, "cpu_isa", level)
    x, w, gy = _winograd_case((2, 37, 11, 13), 29, dtype, layout)
    _winograd_check(x, w, gy, (1, 1), "reflect")


def test_winograd_bit_identical_across_runs_and_threads():
    x, w, gy = _winograd_case((3, 40, 45, 37), 36)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 3, 2, 2):
            torch.set_num_threads(t)
            results.append(ops.padded_conv2d_bwd(gy, x, w, [1, 1], [1, 1], 1,
                                                 [False, True, True]))
    finally:
        torch.set_num_threads(threads)
    assert padded_conv.cpu_algorithm(x, w, (1, 1), (1, 1), 1, weight_grad=True) == "winograd"
    for r in results[1:]:
        assert torch.equal(r[1], results[0][1]) and torch.equal(r[2], results[0][2])


@pytest.mark.parametrize("mask", [(True, True, True), (True, True, False), (False, True, False)],
                         ids=str)
def test_winograd_output_masks_and_input_gradient(mask):
    x, w, gy = _winograd_case((2, 32, 14, 13), 32)
    (gi, gw, gb), (_, rw, rb) = _winograd_grads(x, w, gy, (1, 1), "reflect", mask,
                                                forced=None)
    _winograd_close(gw, rw, x, w, gy, (1, 1), "reflect")
    assert gb.numel() == (32 if mask[2] else 0)
    if mask[2]:
        assert_close(gb, rb, atol=1e-5 * rb.abs().max().item(), rtol=1e-5)
    if mask[0]:
        xd = x.detach().double().requires_grad_(True)
        y = F.conv2d(F.pad(xd, (1, 1, 1, 1), mode="reflect"), w.double())
        (want,) = torch.autograd.grad(y, xd, gy.double())
        assert_close(gi, want, atol=1e-5 * want.abs().max().item(), rtol=1e-4)


def test_winograd_public_function_backward_on_a_residual_layer():
    # sf.functional.padded_conv2d with autograd, as JohnsonNet(norm="fused") runs its residual
    # layers (channels_last, reflect padding 1).
    x = make_input((2, 64, 20, 18), torch.float32, "channels_last", requires_grad=True)
    g = torch.Generator().manual_seed(5)
    w = (torch.randn(64, 64, 3, 3, generator=g) * 0.05).requires_grad_(True)
    b = torch.randn(64, generator=g).requires_grad_(True)
    assert padded_conv.cpu_algorithm(x, w, (1, 1), (1, 1), 1, weight_grad=True) == "winograd"
    with sf.backends.use("cpu"):
        y = sf.functional.padded_conv2d(x, w, b, 1, 1, padding_mode="reflect")
    gy = torch.randn(y.shape, generator=g)
    got = torch.autograd.grad(y, (x, w, b), gy)
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    ref = F.conv2d(F.pad(x64, (1, 1, 1, 1), mode="reflect"), w64, b64)
    want = torch.autograd.grad(ref, (x64, w64, b64), gy.double())
    for name, a, e in zip(("input", "weight", "bias"), got, want):
        assert_close(a, e, atol=2e-5 * e.abs().max().item(), rtol=1e-4, name=f"grad_{name}")


@pytest.mark.parametrize("c,o,dtype,layout,expected", [
    (128, 128, torch.float32, "channels_last", "winograd"),   # Johnson's residual layers
    (128, 64, torch.float32, "channels_last", "winograd"),    # ... and upsampling layers
    (64, 32, torch.float32, "channels_last", "winograd"),
    (32, 32, torch.float32, "channels_last", "winograd"),
    (16, 16, torch.float32, "channels_last", "library"),      # too few channels to repay
    (64, 64, torch.float32, "contiguous", "winograd"),
    (32, 32, torch.float32, "contiguous", "library"),
    (128, 128, torch.bfloat16, "channels_last", "winograd"),
    (64, 32, torch.bfloat16, "channels_last", "library"),
    (128, 128, torch.float64, "channels_last", "library"),    # float64: float64 arithmetic
    (64, 8, torch.float32, "channels_last", "direct"),        # few outputs: the direct kernel
])
def test_winograd_which_layers_it_takes(c, o, dtype, layout, expected):
    x = torch.empty(4, c, 64, 64, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.empty(o, c, 3, 3, dtype=dtype)
    assert padded_conv.cpu_algorithm(x, w, (1, 1), (1, 1), 1, weight_grad=True) == expected
    # Stride 2 and 5x5 kernels: never Winograd.
    assert padded_conv.cpu_algorithm(x, w, (2, 2), (1, 1), 1, weight_grad=True) != "winograd"
    w5 = torch.empty(o, c, 5, 5, dtype=dtype)
    assert padded_conv.cpu_algorithm(x, w5, (1, 1), (2, 2), 1, weight_grad=True) != "winograd"


@pytest.mark.parametrize("forced,expected", [("winograd", "winograd"), ("library", "library"),
                                             ("direct", "library"), ("auto", "winograd")])
def test_winograd_environment_override(forced, expected, monkeypatch):
    monkeypatch.setitem(sf.config.options, "conv_algo", forced)
    x = torch.empty(1, 48, 12, 12).contiguous(memory_format=torch.channels_last)
    w = torch.empty(48, 48, 3, 3)
    assert padded_conv.cpu_algorithm(x, w, (1, 1), (1, 1), 1, weight_grad=True) == expected
    # Winograd forced where it does not apply: the library.
    w5 = torch.empty(48, 48, 5, 5)
    assert padded_conv.cpu_algorithm(x, w5, (1, 1), (2, 2), 1, weight_grad=True) == "library"
