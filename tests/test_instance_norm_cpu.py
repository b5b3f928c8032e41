"""Tests specific to the C++ CPU kernel of instance_norm (csrc/cpu/instance_norm_cpu.cpp):
its schedules (plane / channel-block units, segment splitting, fused vs split), vector tails,
the per-instruction-set builds, streaming stores, determinism, large planes, opcheck of the
registered ops and gradcheck through the public function.

Generic backend-parametrised correctness tests live in test_instance_norm.py."""

from __future__ import annotations

import contextlib

import pytest
import torch

import stylize_fast as sf
from stylize_fast.ops import instance_norm_reference as reference
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    assert_half_close,
    make_input,
    poisoned_outputs,
    pytorch_instance_norm_grads,
    tolerance,
)

pytestmark = pytest.mark.skipif(not sf.backends.available()["cpu"],
                                reason="C++ extension not built")

ops = torch.ops.stylize_fast
RELU, LEAKY = sf.ops.common.Activation.RELU, sf.ops.common.Activation.LEAKY_RELU


def _stats_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _affine(kind, n, c, dtype, seed=1):
    if kind == "none":
        return None, None
    g = torch.Generator().manual_seed(seed)
    shape = (n, c) if kind == "sample" else (c,)
    w = (torch.rand(shape, generator=g, dtype=torch.float64) + 0.5).to(_stats_dtype(dtype))
    b = torch.randn(shape, generator=g, dtype=torch.float64).to(_stats_dtype(dtype))
    return w, b


def _reference_grads(x, w, b, act, slope, grad):
    """Float64 reference output and gradients (input, weight, bias)."""
    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b)]
    y = reference.instance_norm_forward(*leaves, 1e-5, act, slope)[0]
    y.backward(grad.double())
    return y.detach(), [t.grad if t is not None else None for t in leaves]


def _check_op(x, w, b, act=RELU, slope=0.1, *, grad_scale=20.0):
    """Run fwd + bwd ops on (x, w, b) with poisoned outputs and compare with the reference."""
    gy = make_input(x.shape, x.dtype, generator=torch.Generator().manual_seed(7))
    with poisoned_outputs():
        y, mean, rstd = ops.instance_norm_fwd(x, w, b, 1e-5, act, slope)
        gx, gw, gb = ops.instance_norm_bwd(gy, x, w, b, mean, rstd, act, slope, [True] * 3)
    for name, t in (("output", y), ("mean", mean), ("rstd", rstd), ("grad_input", gx)):
        assert_all_written(t, name)
    y_ref, grads_ref = _reference_grads(x, w, b, act, slope, gy)
    half = x.dtype in (torch.bfloat16, torch.float16)
    if half:
        # The half-precision rule, against PyTorch's own instance norm + activation in x's dtype.
        fn = torch.relu if act == RELU else \
            (lambda t: torch.nn.functional.leaky_relu(t, slope)) if act == LEAKY else None
        torch_y, torch_grads = pytorch_instance_norm_grads(x, w, b, 1e-5, gy, fn)
        assert_half_close(y, y_ref, terms=x[0, 0].numel(), baseline=torch_y, name="output")
        assert_half_close(gx, grads_ref[0], terms=x[0, 0].numel(), baseline=torch_grads[0],
                          name="grad_input")
    else:
        assert_close(y, y_ref, **tolerance(x.dtype), name="output")
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert gx.is_contiguous(memory_format=torch.channels_last)
    var, mu = torch.var_mean(x.double(), dim=(2, 3), correction=0)
    assert_close(mean, mu, **tolerance(x.dtype if x.dtype == torch.float64 else torch.float32))
    assert_close(rstd, torch.rsqrt(var + 1e-5), atol=1e-4, rtol=1e-4, name="rstd")
    for name, got, want in (("grad_input", gx, grads_ref[0]), ("grad_weight", gw, grads_ref[1]),
                            ("grad_bias", gb, grads_ref[2])):
        if want is None:
            assert got.shape == (0,), f"{name} of an absent parameter must be empty"
            continue
        if half and name == "grad_input":
            continue  # checked above
        # float32 / float64 results (half inputs keep their parameters in float32).
        scale = max(1.0, want.abs().max().item())
        g_tol = tolerance(got.dtype, grad_scale if got.dtype != torch.float64 else 1.0)
        assert_close(got, want, atol=g_tol["atol"] * scale, rtol=g_tol["rtol"], name=name)


@contextlib.contextmanager
def _threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------
# Schedules. Units: NCHW plane; channels_last block of <= 128 channels of one sample.
# Segments: 65536 values (NCHW) / 32 chunks of rows (channels_last). Small units run in groups
# of up to 256 KiB of input (16 planes of 64x64 float).

SCHEDULE_CASES = [
    pytest.param((2, 3, 17, 19), "contiguous", id="nchw-vector-tail"),        # H*W % 16 != 0
    pytest.param((1, 1, 300, 300), "contiguous", id="nchw-split-one-plane"),  # 2 segments, 1 unit
    pytest.param((1, 3, 260, 260), "contiguous", id="nchw-split-3-units"),    # 3 units, 2 segments
    pytest.param((2, 3, 1, 1), "contiguous", id="nchw-hw1"),
    pytest.param((2, 16, 20, 20), "channels_last", id="cl-c16"),              # one full vector
    pytest.param((2, 24, 9, 9), "channels_last", id="cl-c24-tail"),           # C % 16 != 0
    pytest.param((1, 130, 5, 7), "channels_last", id="cl-two-blocks"),        # 128 + 2 channels
    pytest.param((1, 32, 80, 80), "channels_last", id="cl-split"),            # 4 segments, 1 unit
    pytest.param((3, 64, 3, 5), "channels_last", id="cl-c64-short"),
    pytest.param((2, 48, 7, 6), "channels_last", id="cl-c48"),                # 3 vectors
    pytest.param((2, 96, 7, 6), "channels_last", id="cl-c96"),                # 6 vectors
    pytest.param((2, 80, 5, 6), "channels_last", id="cl-c80"),                # 5: params re-read
    pytest.param((2, 128, 5, 6), "channels_last", id="cl-c128"),              # 8: in zmm registers
    pytest.param((2, 21, 64, 64), "contiguous", id="nchw-groups"),            # groups of 16 + 5
    pytest.param((2, 5, 6, 7), "strided", id="non-contiguous"),
]


@pytest.mark.parametrize("shape,layout", SCHEDULE_CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_schedules_float32(shape, layout, threads):
    x = make_input(shape, torch.float32, layout)
    w, b = _affine("channel", shape[0], shape[1], torch.float32)
    with _threads(threads):
        _check_op(x, w, b, RELU)


@pytest.mark.parametrize("shape,layout", [SCHEDULE_CASES[i] for i in (0, 2, 5, 6, 7)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("affine", ["none", "sample"])
def test_schedules_dtypes(shape, layout, dtype, affine):
    x = make_input(shape, dtype, layout)
    w, b = _affine(affine, shape[0], shape[1], dtype)
    _check_op(x, w, b, LEAKY, 0.2)


# Channels_last with C not a multiple of the vector width runs on the periodic view: rows of
# P = lcm(C, 16) values (8 for float64), column j = channel j % C, when H*W % (P / C) == 0;
# otherwise (and for P > 128) on padded copies of each pixel's channels.
PERIODIC_CASES = [
    pytest.param((2, 3, 16, 16), id="c3-p48"),
    pytest.param((2, 1, 8, 6), id="c1-p16"),
    pytest.param((3, 8, 10, 10), id="c8-p16"),
    pytest.param((2, 24, 6, 6), id="c24-p48"),
    pytest.param((2, 40, 4, 10), id="c40-p80"),
    pytest.param((1, 7, 32, 33), id="c7-p112-one-sample"),
    pytest.param((1, 12, 256, 260), id="c12-p48-split-segments"),  # several segments, 1 unit
    pytest.param((2, 8, 5, 7), id="c8-odd-hw-fallback"),            # H*W odd: no whole rows
    pytest.param((2, 72, 3, 4), id="c72-p144-fallback"),             # P > 128
]


@pytest.mark.parametrize("shape", PERIODIC_CASES)
@pytest.mark.parametrize("affine", ["none", "channel", "sample"])
@pytest.mark.parametrize("threads", [1, 2])
def test_channels_last_periodic_view_float32(shape, affine, threads):
    x = make_input(shape, torch.float32, "channels_last")
    w, b = _affine(affine, shape[0], shape[1], torch.float32)
    with _threads(threads):
        _check_op(x, w, b, LEAKY, 0.2)


@pytest.mark.parametrize("shape", [PERIODIC_CASES[i] for i in (0, 3, 4, 7)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_channels_last_periodic_view_dtypes(shape, dtype):
    # float64 has 8 lanes: C = 3 -> P = 24, C = 40 -> P = 40 (no view: a multiple of 8).
    x = make_input(shape, dtype, "channels_last")
    w, b = _affine("sample", shape[0], shape[1], dtype)
    _check_op(x, w, b, RELU)


def test_channels_last_periodic_view_matches_nchw_statistics():
    # Same values in both layouts: the folded column statistics equal the plane statistics.
    x = make_input((2, 24, 16, 16), torch.float64)
    _, mean, rstd = ops.instance_norm_fwd(x, None, None, 1e-5, 0, 0.0)
    _, mean_cl, rstd_cl = ops.instance_norm_fwd(
        x.contiguous(memory_format=torch.channels_last), None, None, 1e-5, 0, 0.0)
    assert_close(mean_cl, mean, atol=1e-12, rtol=1e-12)
    assert_close(rstd_cl, rstd, atol=1e-12, rtol=1e-12)


def test_hw1_gives_activation_of_bias():
    x = make_input((3, 4, 1, 1))
    w, b = _affine("sample", 3, 4, torch.float32)
    y, mean, _ = ops.instance_norm_fwd(x, w, b, 1e-5, RELU, 0.0)
    assert torch.equal(mean, x.reshape(3, 4))
    assert torch.equal(y.reshape(3, 4), torch.relu(b))


def test_large_plane_1024():
    x = make_input((1, 1, 1024, 1024))
    w, b = _affine("channel", 1, 1, torch.float32)
    _check_op(x, w, b, RELU)


def test_large_mean_small_spread():
    # A centred variance survives a mean 1e4 times the spread; E[x^2] - E[x]^2 would not.
    x = make_input((2, 3, 64, 64), torch.float32, mean=1000.0, std=0.1)
    y, mean, rstd = ops.instance_norm_fwd(x, None, None, 0.0, 0, 0.0)
    var, mu = torch.var_mean(x.double(), dim=(2, 3), correction=0)
    assert_close(rstd, torch.rsqrt(var), atol=0, rtol=1e-4, name="rstd")
    assert_close(y, (x.double() - mu[..., None, None]) * torch.rsqrt(var)[..., None, None],
                 atol=2e-3, rtol=1e-3)


# --------------------------------------------------------------------------------------------
# Instruction-set levels and streaming stores

LEVELS = ["default", "avx2", "avx512", "avx512_bf16"]
BF16 = "avx512_bf16"  # AVX-512 + AVX512-BF16: float -> bfloat16 with vcvtne(2)ps2bf16


def _supported_levels(monkeypatch=None):
    if monkeypatch is not None:
        monkeypatch.setitem(sf.config.options, "cpu_isa", None)
    best = ops.instance_norm_cpu_isa()
    return LEVELS[: LEVELS.index(best) + 1] if best in LEVELS else [best]


def _need_bf16_level(monkeypatch):
    if BF16 not in _supported_levels(monkeypatch):
        pytest.skip("this CPU has no AVX512-BF16 (avx512_bf16 level)")


@pytest.mark.parametrize("level", LEVELS)
def test_each_instruction_set(level, monkeypatch):
    if level not in _supported_levels():
        pytest.skip(f"this CPU does not run {level}")
    monkeypatch.setitem(sf.config.options, "cpu_isa", level)
    assert ops.instance_norm_cpu_isa() == level
    for dtype, shape, layout, act in ((torch.float32, (2, 3, 17, 19), "contiguous", LEAKY),
                                      (torch.float32, (2, 3, 17, 19), "contiguous", RELU),
                                      (torch.float16, (2, 3, 17, 19), "contiguous", LEAKY),
                                      (torch.bfloat16, (2, 3, 17, 19), "contiguous", LEAKY),
                                      (torch.bfloat16, (2, 3, 17, 19), "contiguous", RELU),
                                      (torch.bfloat16, (2, 24, 9, 9), "channels_last", LEAKY),
                                      (torch.float64, (2, 16, 5, 5), "channels_last", LEAKY)):
        x = make_input(shape, dtype, layout)
        w, b = _affine("channel", shape[0], shape[1], dtype)
        _check_op(x, w, b, act, 0.1)


@pytest.mark.parametrize("value", ["sse9", "avx512bf16", "AVX512_BF16", "avx512-bf16"])
def test_bad_isa_variable(value, monkeypatch):
    with pytest.raises(sf.config.ConfigError, match="STYLIZE_FAST_CPU_ISA must be one of default, "
                                                    "avx2, avx512, avx512_bf16"):
        monkeypatch.setitem(sf.config.options, "cpu_isa", value)
    with pytest.raises(RuntimeError, match="STYLIZE_FAST_CPU_ISA must be one of default, avx2, "
                                           "avx512, avx512_bf16"):
        ops.set_option("cpu_isa", value)  # the C++ side checks what it is given too


def test_avx512_bf16_level_is_reported(monkeypatch):
    _need_bf16_level(monkeypatch)
    assert ops.instance_norm_cpu_isa() == BF16  # the CPU's best when nothing caps it
    monkeypatch.setitem(sf.config.options, "cpu_isa", BF16)
    assert ops.instance_norm_cpu_isa() == BF16
    monkeypatch.setitem(sf.config.options, "cpu_isa", "avx512")  # still caps below the BF16 level
    assert ops.instance_norm_cpu_isa() == "avx512"


# Level 3 (avx512_bf16) differs from the others only in float -> bfloat16 rounding: same
# round-to-nearest-even, but a subnormal float becomes a signed zero and a NaN keeps its sign
# and payload (quieted) where c10::BFloat16(float) gives a bfloat16 subnormal / 0x7FC0.

BF16_CASES = [
    pytest.param((2, 3, 17, 19), "contiguous", id="nchw-tails"),             # 323: pairs + tail
    pytest.param((1, 2, 300, 300), "contiguous", id="nchw-split"),           # 2 segments
    pytest.param((3, 5, 64, 64), "contiguous", id="nchw-fused"),
    pytest.param((2, 24, 9, 9), "channels_last", id="cl-c24"),
    pytest.param((2, 5, 6, 7), "strided", id="non-contiguous"),
]


@pytest.mark.parametrize("shape,layout", BF16_CASES)
@pytest.mark.parametrize("act", [0, RELU, LEAKY])
def test_avx512_bf16_level_against_reference(shape, layout, act, monkeypatch):
    _need_bf16_level(monkeypatch)
    monkeypatch.setitem(sf.config.options, "cpu_isa", BF16)
    x = make_input(shape, torch.bfloat16, layout)
    w, b = _affine("sample", shape[0], shape[1], torch.bfloat16)
    _check_op(x, w, b, act, 0.1)


def _ordered(bits):
    """bfloat16 bit patterns (int16) -> integers whose differences count ulps (-0 == +0)."""
    b = bits.to(torch.int32)
    return torch.where(b < 0, -(b & 0x7FFF), b)


@pytest.mark.parametrize("shape,layout", BF16_CASES)
def test_avx512_bf16_level_within_one_ulp_of_avx512(shape, layout, monkeypatch):
    _need_bf16_level(monkeypatch)
    x = make_input(shape, torch.bfloat16, layout)
    w, b = _affine("channel", shape[0], shape[1], torch.bfloat16)
    gy = make_input(shape, torch.bfloat16, generator=torch.Generator().manual_seed(3))
    runs = {}
    for level in ("avx512", BF16):
        monkeypatch.setitem(sf.config.options, "cpu_isa", level)
        y, m, r = ops.instance_norm_fwd(x, w, b, 1e-5, LEAKY, 0.1)
        gx, gw, gb = ops.instance_norm_bwd(gy, x, w, b, m, r, LEAKY, 0.1, [True] * 3)
        runs[level] = (y, gx, m, r, gw, gb)
    for name, a, c in zip(("output", "grad_input"), runs["avx512"][:2], runs[BF16][:2]):
        assert a.isfinite().all() and c.isfinite().all()
        ulps = (_ordered(a.contiguous().view(torch.int16)) -
                _ordered(c.contiguous().view(torch.int16))).abs().max().item()
        assert ulps <= 1, f"{name}: level 3 and level 2 differ by {ulps} bfloat16 ulps"
    # The statistics and the float32 parameter gradients do not depend on the level.
    for a, c in zip(runs["avx512"][2:], runs[BF16][2:]):
        assert torch.equal(a, c)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("act", [RELU, LEAKY])
@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 3, 16, 16)], ids=["tail", "pairs"])
def test_bf16_nan_stays_nan(level, act, shape, monkeypatch):
    if level not in _supported_levels(monkeypatch):
        pytest.skip(f"this CPU does not run {level}")
    monkeypatch.setitem(sf.config.options, "cpu_isa", level)
    x = make_input(shape, torch.bfloat16)
    x[0, 1, 2, 3] = float("nan")  # plane (0, 1): NaN mean, so every pre-activation is NaN
    neg_nan = torch.tensor([-0x3F], dtype=torch.int16).view(torch.bfloat16)  # 0xFFC1
    x[-1, 2, 1, 1] = neg_nan[0]  # a negative NaN with a payload: relu must not make it 0
    y, _, _ = ops.instance_norm_fwd(x, None, None, 1e-5, act, 0.1)
    nan_planes = torch.zeros(shape[:2], dtype=torch.bool)
    nan_planes[0, 1] = nan_planes[-1, 2] = True
    assert y[nan_planes].isnan().all(), "a NaN pre-activation must stay NaN"
    assert not y[~nan_planes].isnan().any()
    bits = y[nan_planes].view(torch.int16)
    if level != BF16:  # c10::BFloat16(float): every NaN becomes 0x7FC0
        assert (bits == 0x7FC0).all()


def _c10_bf16_bits(f):
    """c10::BFloat16(float) on float32 values, as int16 bit patterns: round to nearest even on
    the integer bits, NaN -> 0x7FC0 (written out here, independent of torch's own conversion)."""
    u = f.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    r = torch.where(f.isnan(), torch.full_like(r, 0x7FC0), r)
    return torch.where(r >= 0x8000, r - 0x10000, r).to(torch.int16)


@pytest.mark.parametrize("shape", [(1, 2, 9, 7), (1, 2, 32, 32)], ids=["tail", "pairs"])
def test_bf16_subnormal_outputs(shape, monkeypatch):
    """Documents the level-3 deviation: a pre-activation that is a subnormal float becomes a
    signed zero at avx512_bf16 and a bfloat16 subnormal (as c10 rounds it) below; everything
    else rounds identically."""
    _need_bf16_level(monkeypatch)
    x = make_input(shape, torch.bfloat16)
    w = torch.tensor([1e-39, 1.0])  # plane 0: scale = rstd * 1e-39, subnormal pre-activations
    outs = {}
    for level in ("avx512", BF16):
        monkeypatch.setitem(sf.config.options, "cpu_isa", level)
        y, mean, rstd = ops.instance_norm_fwd(x, w, None, 1e-5, 0, 0.0)
        outs[level] = y.view(torch.int16)
    # The kernel's float pre-activation: (x - mean) * (rstd * w) (+ 0), one rounding each.
    scale = (rstd * w).reshape(1, 2, 1, 1)
    pre = (x.float() - mean.reshape(1, 2, 1, 1)) * scale
    subnormal = (pre != 0) & (pre.abs() < torch.finfo(torch.float32).tiny)
    assert subnormal[0, 0].float().mean() > 0.9 and not subnormal[0, 1].any()
    assert torch.equal(outs["avx512"], _c10_bf16_bits(pre))
    assert (outs["avx512"][subnormal] & 0x7FFF != 0).any(), "expected bfloat16 subnormals"
    sign = torch.where(pre < 0, torch.tensor(-0x8000, dtype=torch.int16),
                       torch.tensor(0, dtype=torch.int16))
    want = torch.where(subnormal, sign, _c10_bf16_bits(pre))
    assert torch.equal(outs[BF16], want)


@pytest.mark.parametrize("shape,layout", [
    pytest.param((2, 3, 17, 19), "contiguous", id="nchw-unaligned-planes"),
    pytest.param((2, 32, 9, 9), "channels_last", id="cl-aligned-rows"),
    pytest.param((2, 24, 9, 9), "channels_last", id="cl-unaligned-rows"),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_streaming_stores_same_bits(shape, layout, dtype, monkeypatch):
    x = make_input(shape, dtype, layout)
    w, b = _affine("channel", shape[0], shape[1], dtype)
    gy = make_input(shape, dtype)
    y0, m0, r0 = ops.instance_norm_fwd(x, w, b, 1e-5, RELU, 0.0)
    g0 = ops.instance_norm_bwd(gy, x, w, b, m0, r0, RELU, 0.0, [True] * 3)
    monkeypatch.setitem(sf.config.options, "cpu_stream_bytes", "0")
    with poisoned_outputs():
        y1, _, _ = ops.instance_norm_fwd(x, w, b, 1e-5, RELU, 0.0)
        g1 = ops.instance_norm_bwd(gy, x, w, b, m0, r0, RELU, 0.0, [True] * 3)
    assert torch.equal(y0, y1)
    assert all(torch.equal(a, c) for a, c in zip(g0, g1))


# --------------------------------------------------------------------------------------------
# Determinism: same bits across runs and across thread counts


@pytest.mark.parametrize("shape,layout", [
    pytest.param((1, 3, 260, 260), "contiguous", id="nchw-split"),
    pytest.param((4, 8, 33, 31), "contiguous", id="nchw-fused"),
    pytest.param((1, 32, 80, 80), "channels_last", id="cl-split"),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_deterministic(shape, layout, dtype):
    x = make_input(shape, dtype, layout)
    w, b = _affine("channel", shape[0], shape[1], dtype)
    gy = make_input(shape, dtype)

    def run():
        y, m, r = ops.instance_norm_fwd(x, w, b, 1e-5, LEAKY, 0.1)
        return (y, m, r, *ops.instance_norm_bwd(gy, x, w, b, m, r, LEAKY, 0.1, [True] * 3))

    first = run()
    again = run()
    with _threads(1):
        serial = run()
    for a, c, s in zip(first, again, serial):
        assert torch.equal(a, c), "two runs differ"
        assert torch.equal(a, s), "1 thread and several threads differ"


# --------------------------------------------------------------------------------------------
# Output mask, empty tensors, errors


def test_output_mask_and_absent_parameters():
    x = make_input((2, 3, 5, 5))
    w, b = _affine("channel", 2, 3, torch.float32)
    y, m, r = ops.instance_norm_fwd(x, w, None, 1e-5, RELU, 0.0)
    gy = make_input(x.shape)
    gx, gw, gb = ops.instance_norm_bwd(gy, x, w, None, m, r, RELU, 0.0, [False, True, True])
    assert gx.shape == (0,) and gb.shape == (0,) and gw.shape == (3,)
    full = ops.instance_norm_bwd(gy, x, w, None, m, r, RELU, 0.0, [True, True, False])
    assert torch.equal(full[1], gw)


def test_empty_batch():
    x = torch.empty(0, 3, 4, 4)
    y, m, r = ops.instance_norm_fwd(x, None, None, 1e-5, 0, 0.0)
    assert y.shape == x.shape and m.shape == (0, 3)


@pytest.mark.parametrize("mutate,match", [
    (lambda a: a.update(input=a["input"].int()), "float32, float64, bfloat16 or float16"),
    (lambda a: a.update(input=a["input"][0]), "4 dimensions"),
    (lambda a: a.update(weight=torch.ones(4)), "weight must have shape"),
    (lambda a: a.update(weight=torch.ones(3, dtype=torch.float64)), "weight must have dtype"),
    (lambda a: a.update(bias=torch.ones(2, 4)), "bias must have shape"),
    (lambda a: a.update(eps=-1.0), "eps must be >= 0"),
    (lambda a: a.update(activation=3), "activation must be"),
])
def test_bad_arguments_fwd(mutate, match):
    args = dict(input=make_input((2, 3, 4, 4)), weight=torch.ones(3), bias=torch.zeros(3),
                eps=1e-5, activation=1, negative_slope=0.0)
    mutate(args)
    with pytest.raises(RuntimeError, match=match):
        ops.instance_norm_fwd(*args.values())


def test_bad_arguments_bwd():
    x = make_input((2, 3, 4, 4))
    y, m, r = ops.instance_norm_fwd(x, None, None, 1e-5, 1, 0.0)
    with pytest.raises(RuntimeError, match="mean must have shape"):
        ops.instance_norm_bwd(x, x, None, None, m[:1], r, 1, 0.0, [True] * 3)
    with pytest.raises(RuntimeError, match="rstd must have dtype"):
        ops.instance_norm_bwd(x, x, None, None, m, r.double(), 1, 0.0, [True] * 3)
    with pytest.raises(RuntimeError, match="grad_output must have the input's shape"):
        ops.instance_norm_bwd(x[:1], x, None, None, m, r, 1, 0.0, [True] * 3)


# --------------------------------------------------------------------------------------------
# opcheck on the registered ops, gradcheck through the public function


def _opcheck_cases():
    cases = []
    for shape, layout, dtype, affine, act in (
        ((2, 3, 5, 7), "contiguous", torch.float32, "channel", RELU),
        ((2, 3, 5, 7), "channels_last", torch.float32, "sample", LEAKY),
        ((2, 20, 3, 3), "channels_last", torch.bfloat16, "none", RELU),
        ((1, 2, 4, 4), "contiguous", torch.float64, "sample", 0),
    ):
        x = make_input(shape, dtype, layout)
        w, b = _affine(affine, shape[0], shape[1], dtype)
        cases.append(pytest.param((x, w, b, 1e-5, act, 0.1), id=f"{layout}-{dtype}-{affine}"))
    return cases


@pytest.mark.parametrize("args", _opcheck_cases())
def test_opcheck_fwd(args):
    torch.library.opcheck(ops.instance_norm_fwd, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration"))


@pytest.mark.parametrize("mask", [[True, True, True], [True, False, True], [False, True, False]])
@pytest.mark.parametrize("affine", ["channel", "sample"])
def test_opcheck_bwd_float64(mask, affine):
    x = make_input((2, 3, 4, 5), torch.float64, "channels_last")
    w, b = _affine(affine, 2, 3, torch.float64)
    _, m, r = ops.instance_norm_fwd(x, w, b, 1e-5, LEAKY, 0.1)
    gy = make_input(x.shape, torch.float64)
    torch.library.opcheck(ops.instance_norm_bwd, (gy, x, w, b, m, r, LEAKY, 0.1, mask),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu"])
@pytest.mark.parametrize("affine", ["channel", "sample"])
def test_gradcheck_float64(layout, activation, affine):
    x = make_input((2, 3, 4, 5), torch.float64, layout, requires_grad=True)
    w, b = _affine(affine, 2, 3, torch.float64)
    w.requires_grad_()
    b.requires_grad_()
    with sf.backends.use("cpu"):
        assert torch.autograd.gradcheck(
            lambda x, w, b: sf.functional.instance_norm(x, w, b, activation=activation,
                                                        negative_slope=0.2),
            (x, w, b))
