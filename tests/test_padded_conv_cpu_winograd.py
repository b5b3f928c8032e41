"""The CPU padded convolution's Winograd F(4x4, 3x3) path (csrc/cpu/padded_conv_cpu_winograd.cpp)
against the float64 reference, and the CPU kernel's algorithm choice.

Forced with STYLIZE_FAST_CONV_ALGO=winograd so every case really runs it (the automatic choice
only takes it for wide channels_last layers); each case asserts the algorithm it ran.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import stylize_fast as sf
from stylize_fast.ops import padded_conv as padded_conv_ops
from stylize_fast.ops.common import output_memory_format
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

MODES = sf.ops.common.PADDING_MODE_NAMES  # name -> kernel code
F_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}
LEVELS = ["default", "avx2", "avx512", "avx512_bf16"]  # avx512_bf16 runs the avx512 conv kernels


def _op():
    return torch.ops.stylize_fast


def _weights(o, c, bias=True, seed=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(o, c, 3, 3, generator=g, dtype=torch.float64) * (9 * c) ** -0.5
    b = torch.randn(o, generator=g, dtype=torch.float64) if bias else None
    return w.to(dtype), (b.to(dtype) if bias else None)


def _expected(x, w, b, padding, mode):
    ph, pw = padding
    xp = F.pad(x.double(), (pw, pw, ph, ph), mode=F_MODES[mode])
    return F.conv2d(xp, w.double(), None if b is None else b.double())


def _check(y, expected):
    # F(4x4, 3x3) loses a few bits in float32 (transform constants up to 8 and 1/24): errors
    # are bounded relative to the output's scale rather than element-wise. bfloat16 tensors are
    # computed in float32 and rounded once: half a bfloat16 ulp (2^-9 relative) on top.
    scale = expected.abs().max().item()
    if y.dtype == torch.bfloat16:
        assert_close(y, expected, atol=3e-5 * scale, rtol=2.0**-8)
    else:
        assert_close(y, expected, atol=3e-5 * scale, rtol=1e-4)


def _algorithm(x, w, stride, padding, mode):
    return padded_conv_ops.cpu_algorithm(x, w, stride, padding, MODES[mode])


@pytest.fixture
def winograd(monkeypatch):
    monkeypatch.setitem(sf.config.options, "conv_algo", "winograd")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape,out_channels,padding", [
    pytest.param((1, 16, 8, 8), 16, (1, 1), id="one-vector"),
    pytest.param((2, 19, 7, 13), 21, (1, 1), id="odd-channels-and-sizes"),
    pytest.param((1, 3, 5, 6), 1, (1, 1), id="few-channels"),
    pytest.param((3, 1, 9, 4), 40, (1, 1), id="one-input-channel"),
    pytest.param((1, 20, 6, 11), 17, (2, 1), id="asymmetric-pad"),
    pytest.param((1, 17, 3, 3), 18, (2, 2), id="pad=size-1"),
    pytest.param((1, 16, 10, 9), 16, (0, 0), id="no-pad"),
    pytest.param((1, 24, 2, 1), 16, (1, 1), id="tiny-plane"),
])
def test_forward_matches_reference(winograd, mode, layout, shape, out_channels, padding, dtype):
    if mode == "reflect" and (padding[0] >= shape[2] or padding[1] >= shape[3]):
        pytest.skip("reflect needs pad < size")
    x = make_input(shape, dtype, layout=layout)
    w, b = _weights(out_channels, shape[1], dtype=dtype)
    assert _algorithm(x, w, (1, 1), padding, mode) == "winograd"
    with poisoned_outputs():
        y = _op().padded_conv2d_fwd(x, w, b, [1, 1], list(padding), MODES[mode])
    assert_all_written(y)
    _check(y, _expected(x, w, b, padding, mode))
    assert y.is_contiguous(memory_format=output_memory_format(x))


@pytest.mark.parametrize("block", ["6", "12", "7"])
def test_many_blocks_and_a_partial_last_block(winograd, monkeypatch, block):
    # 10 x 12 tiles per image in blocks of 6 / 12 / 7 (rounded to the kernel's row step): blocks
    # span tile rows, images, and the last one is partial.
    monkeypatch.setitem(sf.config.options, "winograd_block", block)
    x = make_input((2, 32, 37, 45), layout="channels_last")
    w, b = _weights(48, 32)
    with poisoned_outputs():
        y = _op().padded_conv2d_fwd(x, w, b, [1, 1], [1, 1], 1)
    assert_all_written(y)
    _check(y, _expected(x, w, b, (1, 1), "reflect"))


@pytest.mark.parametrize("level", LEVELS)
def test_each_instruction_set(winograd, monkeypatch, level):
    best = _op().instance_norm_cpu_isa()
    if LEVELS.index(level) > LEVELS.index(best):
        pytest.skip(f"this CPU does not run {level}")
    monkeypatch.setitem(sf.config.options, "cpu_isa", level)
    for layout, dtype in itertools.product(("contiguous", "channels_last"),
                                           (torch.float32, torch.bfloat16)):
        x = make_input((1, 35, 13, 10), dtype, layout=layout)
        w, b = _weights(33, 35, dtype=dtype)
        y = _op().padded_conv2d_fwd(x, w, b, [1, 1], [1, 1], 2)
        _check(y, _expected(x, w, b, (1, 1), "replicate"))


# Wide layers (VGG's loss network): the GEMM runs in slices of input channels (128 at the
# avx512 level, 512 at the others) over U panels of 64 output channels (16 at the others) plus
# 16-wide tail panels; once U exceeds 16 MB, blocks are large and span images.
WIDE = [
    # Cpad 528: several channel slices at every level; Opad 80: a 64-wide panel and a tail one
    pytest.param((2, 520, 9, 11), 70, id="channel-slices-and-a-tail-panel"),
    # U = 36 x 352 x 352 floats (17.8 MB, over 16 MB): streamed weights, large blocks spanning
    # the 3 images (12 tiles each)
    pytest.param((3, 352, 9, 13), 352, id="streamed-weights-blocks-span-images"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape,out_channels", WIDE)
def test_wide_layers_match_reference(winograd, mode, layout, shape, out_channels, dtype):
    x = make_input(shape, dtype, layout=layout)
    w, b = _weights(out_channels, shape[1], dtype=dtype)
    with poisoned_outputs():
        y = _op().padded_conv2d_fwd(x, w, b, [1, 1], [1, 1], MODES[mode])
    assert_all_written(y)
    _check(y, _expected(x, w, b, (1, 1), mode))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_automatic_blocks_of_a_wide_layer_with_any_thread_count(winograd, threads):
    # The automatic block size evens blocks out over the threads: any count, same result.
    x = make_input((3, 352, 9, 13), layout="channels_last")
    w, b = _weights(352, 352)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with poisoned_outputs():
            y = _op().padded_conv2d_fwd(x, w, b, [1, 1], [1, 1], 1)
    finally:
        torch.set_num_threads(before)
    assert_all_written(y)
    _check(y, _expected(x, w, b, (1, 1), "reflect"))


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("block", ["6", "12", "30", "1000"])
def test_blocks_spanning_images(winograd, monkeypatch, block, layout):
    # 3 images of 3 x 5 tiles: channels-last blocks of 6 / 12 / 30 tiles start and end inside
    # images, 1000 is one block of all 45 tiles (a partial last row step); NCHW blocks stay
    # within a tile row.
    monkeypatch.setitem(sf.config.options, "winograd_block", block)
    x = make_input((3, 40, 10, 18), layout=layout)
    w, b = _weights(36, 40)
    with poisoned_outputs():
        y = _op().padded_conv2d_fwd(x, w, b, [1, 1], [1, 1], 0)
    assert_all_written(y)
    _check(y, _expected(x, w, b, (1, 1), "zeros"))


@pytest.mark.parametrize("level", LEVELS)
def test_each_instruction_set_on_a_wide_layer(winograd, monkeypatch, level):
    best = _op().instance_norm_cpu_isa()
    if LEVELS.index(level) > LEVELS.index(best):
        pytest.skip(f"this CPU does not run {level}")
    monkeypatch.setitem(sf.config.options, "cpu_isa", level)
    for layout, dtype in itertools.product(("contiguous", "channels_last"),
                                           (torch.float32, torch.bfloat16)):
        x = make_input((2, 520, 6, 9), dtype, layout=layout)
        w, b = _weights(70, 520, dtype=dtype)
        y = _op().padded_conv2d_fwd(x, w, b, [1, 1], [1, 1], 0)
        _check(y, _expected(x, w, b, (1, 1), "zeros"))


def test_without_bias_and_deterministic(winograd):
    x = make_input((1, 32, 16, 16), layout="channels_last")
    w, _ = _weights(32, 32, bias=False)
    y1 = _op().padded_conv2d_fwd(x, w, None, [1, 1], [1, 1], 1)
    y2 = _op().padded_conv2d_fwd(x, w, None, [1, 1], [1, 1], 1)
    assert torch.equal(y1, y2)
    _check(y1, _expected(x, w, None, (1, 1), "reflect"))


def test_generator_layer_through_the_public_api():
    # Johnson's residual conv in channels_last: the automatic choice runs the CPU kernel's
    # Winograd path, and gradients (library backward) are still exact.
    x = make_input((1, 128, 20, 20), layout="channels_last", requires_grad=True)
    w, b = _weights(128, 128)
    w.requires_grad_(True)
    b.requires_grad_(True)
    assert sf.backends.select("padded_conv2d", x, w, b, (1, 1), (1, 1), 1)[0] == "cpu"
    assert _algorithm(x, w, (1, 1), (1, 1), "reflect") == "winograd"
    y = sf.functional.padded_conv2d(x, w, b, padding=1, padding_mode="reflect")
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    expected = F.conv2d(F.pad(x64, (1, 1, 1, 1), mode="reflect"), w64, b64)
    _check(y, expected)
    gy = torch.randn_like(expected)
    grads = torch.autograd.grad(y, (x, w, b), gy.float())
    expected_grads = torch.autograd.grad(expected, (x64, w64, b64), gy)
    for name, g, e in zip(("input", "weight", "bias"), grads, expected_grads):
        assert_close(g, e, atol=1e-4 * e.abs().max().item(), rtol=1e-4, name=f"grad_{name}")


def test_torch_compile_runs_the_same_kernel():
    x = make_input((1, 32, 12, 12), layout="channels_last")
    w, b = _weights(32, 32)

    def fn(t):
        return sf.functional.padded_conv2d(t, w, b, padding=1, padding_mode="reflect")

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    assert torch.equal(compiled(x), fn(x))


# --------------------------------------------------------------------------------------------
# The algorithm choice


@pytest.mark.parametrize("case,expected", [
    pytest.param(dict(), "winograd", id="wide-channels_last-float32"),
    pytest.param(dict(layout="contiguous", c=64, o=32), "library", id="narrow-nchw"),
    pytest.param(dict(layout="contiguous", c=128, o=128), "winograd", id="wide-nchw"),
    pytest.param(dict(c=8), "library", id="few-input-channels"),
    pytest.param(dict(dtype=torch.float64), "library", id="float64"),
    pytest.param(dict(dtype=torch.bfloat16), "library", id="bfloat16-narrow"),
    pytest.param(dict(dtype=torch.bfloat16, c=128, o=128), "winograd", id="bfloat16-wide"),
    pytest.param(dict(dtype=torch.bfloat16, c=128, o=128, layout="contiguous"), "library",
                 id="bfloat16-wide-nchw"),
    pytest.param(dict(dtype=torch.float16, c=128, o=128), "library", id="float16"),
    pytest.param(dict(stride=(2, 2)), "library", id="stride-2"),
    pytest.param(dict(k=5), "library", id="5x5"),
])
def test_automatic_algorithm(case, expected, monkeypatch):
    monkeypatch.setitem(sf.config.options, "conv_algo", None)
    c, o, k = case.get("c", 32), case.get("o", 32), case.get("k", 3)
    dtype = case.get("dtype", torch.float32)
    x = make_input((1, c, 16, 16), dtype, case.get("layout", "channels_last"))
    w = torch.randn(o, c, k, k, dtype=dtype)
    stride = case.get("stride", (1, 1))
    assert _algorithm(x, w, stride, (1, 1), "reflect") == expected
    chosen = sf.backends.select("padded_conv2d", x, w, None, stride, (1, 1), 1)[0]
    assert chosen == ("cpu" if expected != "library" else "reference")


def test_forcing_an_algorithm_that_does_not_apply_is_a_clear_error(monkeypatch):
    x = make_input((1, 16, 8, 8))
    w = torch.randn(16, 16, 5, 5)
    monkeypatch.setitem(sf.config.options, "conv_algo", "winograd")
    with pytest.raises(RuntimeError, match="Winograd F\\(4x4, 3x3\\) does not handle this layer"):
        _op().padded_conv2d_fwd(x, w, None, [1, 1], [2, 2], 1)
    with pytest.raises(sf.config.ConfigError, match="STYLIZE_FAST_CONV_ALGO must be one of"):
        monkeypatch.setitem(sf.config.options, "conv_algo", "fastest")
    with pytest.raises(RuntimeError, match="STYLIZE_FAST_CONV_ALGO must be one of"):
        _op().set_option("conv_algo", "fastest")


def test_library_algorithm_can_be_forced(monkeypatch):
    x = make_input((1, 32, 9, 9), layout="channels_last")
    w, b = _weights(32, 32)
    monkeypatch.setitem(sf.config.options, "conv_algo", "library")
    assert _algorithm(x, w, (1, 1), (1, 1), "reflect") == "library"
    y = _op().padded_conv2d_fwd(x, w, b, [1, 1], [1, 1], 1)
    assert_close(y, _expected(x, w, b, (1, 1), "reflect"), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Backward: the input gradient's zero-padded part runs as a Winograd convolution of grad_output


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape,out_channels,padding", [
    pytest.param((2, 19, 7, 13), 21, (1, 1), id="odd"),
    pytest.param((1, 20, 6, 11), 17, (2, 1), id="asymmetric-pad"),
    pytest.param((1, 16, 10, 9), 16, (0, 0), id="no-pad"),
    pytest.param((1, 17, 3, 3), 18, (2, 2), id="pad=size-1"),
])
@pytest.mark.parametrize("needs", ["all", "input-only"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backward_matches_reference(winograd, mode, layout, shape, out_channels, padding, needs,
                                    dtype):
    if mode == "reflect" and (padding[0] >= shape[2] or padding[1] >= shape[3]):
        pytest.skip("reflect needs pad < size")
    x = make_input(shape, dtype, layout=layout, requires_grad=True)
    w, b = _weights(out_channels, shape[1], dtype=dtype)
    w.requires_grad_(needs == "all")
    b.requires_grad_(needs == "all")
    assert padded_conv_ops.cpu_algorithm(x, w, (1, 1), padding, MODES[mode],
                                         input_grad=True) == "winograd"
    y = _op().padded_conv2d_fwd(x, w, b, [1, 1], list(padding), MODES[mode])
    x64, w64, b64 = (t.detach().double().requires_grad_(t.requires_grad) for t in (x, w, b))
    expected = _expected(x64, w64, b64, padding, mode)
    gy = torch.randn(expected.shape, dtype=torch.float64).to(dtype)
    inputs = [t for t in (x, w, b) if t.requires_grad]
    with poisoned_outputs():
        grads = torch.autograd.grad(y, inputs, gy)
    expected_grads = torch.autograd.grad(expected, [t for t in (x64, w64, b64) if t.requires_grad],
                                         gy.double())
    # bfloat16: the half-precision rule, against PyTorch's own F.pad + F.conv2d in bfloat16.
    torch_grads = pytorch_padded_conv2d_grads(x, w, b, (1, 1), padding, mode, gy)[1]
    torch_grads = [g for g, t in zip(torch_grads, (x, w, b)) if t.requires_grad]
    for g, e, base in zip(grads, expected_grads, torch_grads):
        assert_all_written(g)
        if dtype == torch.bfloat16:
            assert_half_close(g, e, terms=expected[:, 0].numel(), baseline=base)
        else:
            assert_close(g, e, atol=3e-5 * e.abs().max().item(), rtol=1e-4)
    assert grads[0].is_contiguous(memory_format=output_memory_format(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape,out_channels", WIDE)
def test_wide_input_gradient_matches_reference(winograd, mode, layout, shape, out_channels, dtype):
    # The input gradient runs the forward Winograd on grad_output with the flipped, transposed
    # weight (out_channels -> in channels): wide on both sides, slices and tail panels swapped.
    x = make_input(shape, dtype, layout=layout, requires_grad=True)
    w, _ = _weights(out_channels, shape[1], bias=False, dtype=dtype)
    assert padded_conv_ops.cpu_algorithm(x, w, (1, 1), (1, 1), MODES[mode],
                                         input_grad=True) == "winograd"
    y = _op().padded_conv2d_fwd(x, w, None, [1, 1], [1, 1], MODES[mode])
    x64 = x.detach().double().requires_grad_(True)
    expected = _expected(x64, w.double(), None, (1, 1), mode)
    gy = torch.randn(expected.shape, dtype=torch.float64).to(dtype)
    with poisoned_outputs():
        (grad,) = torch.autograd.grad(y, [x], gy)
    (expected_grad,) = torch.autograd.grad(expected, [x64], gy.double())
    assert_all_written(grad)
    if dtype == torch.bfloat16:
        base = pytorch_padded_conv2d_grads(x, w, None, (1, 1), (1, 1), mode, gy)[1][0]
        assert_half_close(grad, expected_grad, terms=expected[:, 0].numel(), baseline=base)
    else:
        assert_close(grad, expected_grad, atol=3e-5 * expected_grad.abs().max().item(), rtol=1e-4)
    assert grad.is_contiguous(memory_format=output_memory_format(x))


@pytest.mark.parametrize("weight_layout", ["contiguous", "channels_last", "strided"])
def test_input_gradient_reads_the_weight_in_place(winograd, weight_layout):
    # The input gradient reads the weight's taps flipped through its strides (no flipped copy):
    # a fast path for contiguous taps, a strided one otherwise.
    x = make_input((2, 24, 9, 10), layout="channels_last", requires_grad=True)
    w, _ = _weights(40, 24, bias=False)
    if weight_layout == "channels_last":
        w = w.contiguous(memory_format=torch.channels_last)
    elif weight_layout == "strided":
        w = torch.cat([w, w], dim=3)[..., ::2]
    y = _op().padded_conv2d_fwd(x, w, None, [1, 1], [1, 1], 0)
    x64 = x.detach().double().requires_grad_(True)
    expected = _expected(x64, w.double(), None, (1, 1), "zeros")
    gy = torch.randn(expected.shape, dtype=torch.float64)
    with poisoned_outputs():
        (grad,) = torch.autograd.grad(y, [x], gy.float())
    (expected_grad,) = torch.autograd.grad(expected, [x64], gy)
    assert_all_written(grad)
    assert_close(grad, expected_grad, atol=3e-5 * expected_grad.abs().max().item(), rtol=1e-4)


def test_backward_input_gradient_algorithm(monkeypatch):
    monkeypatch.setitem(sf.config.options, "conv_algo", None)
    x = make_input((1, 32, 16, 16), layout="channels_last")
    w = torch.randn(32, 32, 3, 3)
    assert padded_conv_ops.cpu_algorithm(x, w, (1, 1), (1, 1), 1, input_grad=True) == "winograd"
    # padding beyond k - 1 has no zero-padded-convolution form; stride 2 none either
    assert padded_conv_ops.cpu_algorithm(x, w, (1, 1), (3, 3), 1, input_grad=True) == "library"
    assert padded_conv_ops.cpu_algorithm(x, w, (2, 2), (1, 1), 1, input_grad=True) == "library"
    monkeypatch.setitem(sf.config.options, "conv_algo", "library")
    assert padded_conv_ops.cpu_algorithm(x, w, (1, 1), (1, 1), 1, input_grad=True) == "library"


@pytest.mark.parametrize("value", ["0", "-6", "12x", "many"])
def test_bad_block_size_is_a_clear_error(winograd, monkeypatch, value):
    with pytest.raises(sf.config.ConfigError, match="STYLIZE_FAST_WINOGRAD_BLOCK must be a positive"):
        monkeypatch.setitem(sf.config.options, "winograd_block", value)
    with pytest.raises(RuntimeError, match="STYLIZE_FAST_WINOGRAD_BLOCK must be a positive integer"):
        _op().set_option("winograd_block", value)


def test_bad_algorithm_name_in_the_backward_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sf.config.options, "conv_algo", None)
    x = make_input((1, 32, 8, 8), layout="channels_last", requires_grad=True)
    w, b = _weights(32, 32)
    y = _op().padded_conv2d_fwd(x, w, b, [1, 1], [1, 1], 1)
    with pytest.raises(sf.config.ConfigError, match="STYLIZE_FAST_CONV_ALGO must be one of"):
        monkeypatch.setitem(sf.config.options, "conv_algo", "fastest")
    y.sum().backward()  # the rejected value never reached the kernels
