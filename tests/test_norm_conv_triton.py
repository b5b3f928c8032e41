"""Triton normalize-on-load convolution (stylize_fast/ops/norm_conv_triton.py) against the
float64 reference (ops/norm_conv_reference.py), through the public ``norm_conv2d`` with the
``triton`` backend forced: every padding mode x upsampling x epilogue (residual, relu,
statistics), norm activations, affines, layouts and dtypes; statistics across several tiles per
image; poisoned outputs, determinism, gradcheck, opcheck; the Triton ``instance_norm_stats``.

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
which executes every Triton op of every program in Python: shapes are a few hundred elements.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import stylize_fast as sf
from stylize_fast import backends
from stylize_fast.ops import norm_conv
from stylize_fast.ops.common import PaddingMode
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    assert_half_close,
    float64_copy,
    half_tolerance,
    make_input,
    poisoned_outputs,
    relative_error,
    tolerance,
)

triton_ops = pytest.importorskip("stylize_fast.ops.norm_conv_triton")

if not backends.available()["triton"]:
    pytest.skip(f"triton backend unavailable: {backends.unavailable_reason('triton')}",
                allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FWD = torch.ops.stylize_fast.norm_conv2d_fwd_triton
EPS = 1e-5
SLOPE = 0.2  # not the default 0.01, so a kernel ignoring negative_slope fails
MODES = ["zeros", "reflect", "replicate"]
NORM_ACTS = [None, "relu", "leaky_relu"]
# (residual, stats, output activation)
EPILOGUES = {
    "plain": (False, False, None),
    "residual": (True, False, None),
    "stats": (False, True, "relu"),
    "residual-relu-stats": (True, True, "relu"),
}


def _case(shape, c_out, k, dtype, layout, *, upsample=1, stride=1, padding=1, residual=False,
          affine="channel", norm=True):
    """Random inputs (never zeros; the mean is not the input's, so the normalised tensor has a
    non-zero mean and zero padding differs from padding the raw input) as keyword arguments of
    ``norm_conv2d``."""
    n, c = shape[:2]
    stat = torch.float64 if dtype == torch.float64 else torch.float32
    x = make_input(shape, dtype, layout, device=DEVICE)
    kw = dict(weight=make_input((c_out, c, k, k), dtype, mean=0.1, std=0.5, device=DEVICE),
              bias=make_input((c_out,), dtype, device=DEVICE), stride=stride, padding=padding,
              upsample=upsample)
    if norm:
        kw["mean"] = make_input((n, c), stat, device=DEVICE, mean=0.0, std=1.0)
        kw["rstd"] = make_input((n, c), stat, device=DEVICE, mean=0.8, std=0.2).abs() + 0.1
        if affine == "channel":
            kw["norm_weight"] = make_input((c,), stat, device=DEVICE, mean=1.0, std=0.5)
            kw["norm_bias"] = make_input((c,), stat, device=DEVICE, mean=0.2, std=0.5)
        elif affine == "sample":
            kw["norm_weight"] = make_input((n, c), stat, device=DEVICE, mean=1.0, std=0.5)
            kw["norm_bias"] = make_input((n, c), stat, device=DEVICE, mean=0.2, std=0.5)
    if residual:
        out = sf.ops.padded_conv.output_shape(x, kw["weight"], (stride, stride) if
                                              isinstance(stride, int) else stride,
                                              (padding, padding) if isinstance(padding, int)
                                              else padding, upsample)
        kw["residual"] = make_input(out, dtype, "strided", device=DEVICE)  # any strides
    return x, kw


def _call(backend, x, kw, **options):
    with backends.use(backend):
        result = norm_conv.norm_conv2d(x, **kw, **options)
    return result if isinstance(result, tuple) else (result, None, None)


def _check(x, kw, *, name="", **options):
    """Run the Triton backend (poisoned outputs) and compare with the float64 reference on the
    same (rounded) inputs; half types by the half-precision rule against the reference run in
    that dtype (PyTorch's own ops). Returns the Triton results."""
    with poisoned_outputs():
        out, mean, rstd = _call("triton", x, kw, **options)
    stats = options.get("stats_eps") is not None
    assert_all_written(out, f"{name} output")
    want = _call("reference", float64_copy(x), {k: float64_copy(v) if isinstance(v, torch.Tensor)
                                                else v for k, v in kw.items()}, **options)
    dtype = x.dtype
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last if
                             x.is_contiguous(memory_format=torch.channels_last) and
                             not x.is_contiguous() else torch.contiguous_format)
    scale = max(1.0, float(want[0].abs().amax()))
    if dtype in (torch.float16, torch.bfloat16):
        base = _call("reference", x, kw, **options)
        terms = kw["weight"][0].numel()
        assert_half_close(out, want[0], terms=terms, baseline=base[0], name=f"{name} output")
    else:
        assert_close(out, want[0], name=f"{name} output", **tolerance(dtype, scale))
    if not stats:
        assert mean is None and rstd is None
        return out, None, None
    stat = torch.float64 if dtype == torch.float64 else torch.float32
    assert mean.dtype == stat and rstd.dtype == stat
    assert mean.shape == rstd.shape == (x.shape[0], kw["weight"].shape[0])
    assert_all_written(mean, f"{name} mean")
    assert_all_written(rstd, f"{name} rstd")
    if dtype in (torch.float16, torch.bfloat16):
        # The statistics of the rounded output: as far off as the output itself (its mean, an
        # error relative to the output's scale) or twice PyTorch's own (same dtype) op.
        tol = half_tolerance(dtype, terms)
        for got, ref, own, what in ((mean, want[1], base[1], "mean"),
                                    (rstd, want[2], base[2], "rstd")):
            err = (got.double() - ref).abs().amax().item()
            ref_scale = scale if what == "mean" else float(ref.abs().amax())
            own_err = (own.double() - ref).abs().amax().item()
            assert err <= max(2 * tol * ref_scale, 2 * own_err), \
                f"{name} {what}: error {err:.3e} (PyTorch's own: {own_err:.3e})"
    else:
        assert_close(mean, want[1], name=f"{name} mean", **tolerance(dtype, scale))
        assert_close(rstd, want[2], name=f"{name} rstd", atol=0.0,
                     rtol=1e-4 if dtype == torch.float32 else 1e-9)
    return out, mean, rstd


_MATRIX = list(itertools.product(MODES, [1, 2], EPILOGUES))


# Every padding mode x upsampling x epilogue; the norm activation and the layout cycle with the
# case index so each mode meets each activation and both layouts.
@pytest.mark.parametrize("i", range(len(_MATRIX)),
                         ids=[f"{m}-up{u}-{e}" for m, u, e in _MATRIX])
def test_modes_upsample_epilogues(i):
    mode, up, epilogue = _MATRIX[i]
    norm_act = NORM_ACTS[i % 3]
    layout = "channels_last" if i % 2 else "contiguous"
    residual, stats, act = EPILOGUES[epilogue]
    x, kw = _case((2, 3, 4, 5), 4, 3, torch.float32, layout, upsample=up, residual=residual,
                  affine="sample" if i % 4 == 3 else "channel")
    _check(x, kw, name=f"case {i}", padding_mode=mode, norm_activation=norm_act,
           negative_slope=SLOPE, activation=act, stats_eps=EPS if stats else None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_dtypes(dtype, layout, mode):
    up = 2 if mode == "zeros" else 1
    x, kw = _case((2, 3, 4, 5), 5, 3, dtype, layout, upsample=up, residual=True)
    _check(x, kw, name=str(dtype), padding_mode=mode, norm_activation="leaky_relu",
           negative_slope=SLOPE, activation="relu", stats_eps=EPS)


@pytest.mark.parametrize("mode", MODES)
def test_strided_and_rectangular(mode):
    # stride (2, 1), padding (2, 1), a 3x5 kernel: nothing symmetric to hide a swapped index;
    # zero padding 2 wide around a normalised tensor whose mean is not 0.
    x = make_input((1, 3, 6, 5), torch.float32, "channels_last", device=DEVICE)
    n, c = x.shape[:2]
    kw = dict(weight=make_input((4, 3, 3, 5), torch.float32, mean=0.1, std=0.5, device=DEVICE),
              bias=None, stride=(2, 1), padding=(2, 1),
              mean=make_input((n, c), device=DEVICE), rstd=make_input((n, c), device=DEVICE,
                                                                      mean=1.0, std=0.1))
    _check(x, kw, name=mode, padding_mode=mode, norm_activation="relu", stats_eps=EPS)


def test_several_tiles_per_image():
    # 9 x 10 = 90 output pixels per image: two M tiles of 64, the second partly masked, so the
    # statistics merge tiles of different counts; 33 input channels: two K blocks of 32; two
    # images, so a flat (n, oh, ow) tiling would straddle them.
    x, kw = _case((2, 33, 9, 10), 17, 3, torch.float32, "channels_last", residual=True,
                  affine="sample")
    _check(x, kw, name="tiles", padding_mode="reflect", norm_activation="leaky_relu",
           negative_slope=SLOPE, stats_eps=EPS)


def test_stats_of_a_constant_channel():
    # Zero weights make every output of a channel its bias: variance 0, rstd = 1 / sqrt(eps)
    # (centred moments: no cancellation, nothing negative).
    x, kw = _case((1, 2, 9, 9), 3, 3, torch.float32, "contiguous")
    kw["weight"] = torch.zeros_like(kw["weight"])
    out, mean, rstd = _check(x, kw, padding_mode="reflect", stats_eps=EPS)
    assert_close(rstd, torch.full_like(rstd, EPS ** -0.5), atol=0.0, rtol=1e-6, name="rstd")


@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_plain_convolution(mode):
    # Without statistics the op is padded_conv2d (with upsampling and a residual).
    x, kw = _case((2, 3, 4, 4), 4, 3, torch.float32, "contiguous", upsample=2, residual=True,
                  norm=False)
    _check(x, kw, padding_mode=mode, activation="relu", stats_eps=EPS)


def test_kernel_sizes_one_and_nine():
    # 1x1 with padding (the output border is pure padding) and 9x9 with pad == H - 1.
    x, kw = _case((1, 2, 4, 5), 3, 1, torch.float32, "contiguous", padding=(1, 0))
    _check(x, kw, padding_mode="zeros", norm_activation="relu", stats_eps=EPS)
    x, kw = _case((1, 2, 5, 6), 3, 9, torch.float32, "channels_last", padding=(4, 3))
    _check(x, kw, padding_mode="reflect", norm_activation="leaky_relu", negative_slope=SLOPE)


def test_deterministic():
    x, kw = _case((2, 3, 9, 10), 4, 3, torch.float32, "contiguous", residual=True)
    first = _call("triton", x, kw, padding_mode="reflect", stats_eps=EPS)
    second = _call("triton", x, kw, padding_mode="reflect", stats_eps=EPS)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_direct_op_without_stats_returns_empty():
    x, kw = _case((1, 2, 4, 4), 3, 3, torch.float32, "contiguous")
    scale, shift = norm_conv.norm_scale_shift(x, kw["mean"], kw["rstd"], None, None)
    out, mean, rstd = FWD(x, scale, shift, 1, 0.01, kw["weight"], kw["bias"], [1, 1], [1, 1],
                          int(PaddingMode.REFLECT), 0, 1, None, -1.0)
    assert out.shape == (1, 3, 4, 4) and mean.shape == (0,) and rstd.shape == (0,)


@pytest.mark.parametrize("mode,up,norm_act,act", [
    ("reflect", 1, "leaky_relu", None),
    ("zeros", 2, "relu", "relu"),
])
def test_gradcheck_float64(mode, up, norm_act, act):
    n, c, o = 1, 2, 2
    x = make_input((n, c, 3, 3), torch.float64, device=DEVICE, requires_grad=True)
    w = make_input((o, c, 3, 3), torch.float64, mean=0.1, std=0.5, device=DEVICE,
                   requires_grad=True)
    b = make_input((o,), torch.float64, device=DEVICE, requires_grad=True)
    mean = make_input((n, c), torch.float64, device=DEVICE, requires_grad=True)
    rstd = (make_input((n, c), torch.float64, device=DEVICE, mean=1.0, std=0.1)
            .requires_grad_(True))
    nw = make_input((c,), torch.float64, device=DEVICE, mean=1.0, std=0.5, requires_grad=True)
    nb = make_input((c,), torch.float64, device=DEVICE, std=0.5, requires_grad=True)
    res = make_input((n, o, 3 * up, 3 * up), torch.float64, device=DEVICE, requires_grad=True)

    def fn(x, w, b, mean, rstd, nw, nb, res):
        return norm_conv.norm_conv2d(x, w, b, 1, 1, mode, mean=mean, rstd=rstd, norm_weight=nw,
                                     norm_bias=nb, norm_activation=norm_act,
                                     negative_slope=SLOPE, activation=act, upsample=up,
                                     residual=res)

    with backends.use("triton"):
        assert torch.autograd.gradcheck(fn, (x, w, b, mean, rstd, nw, nb, res), fast_mode=True)


def test_opcheck():
    x, kw = _case((1, 2, 4, 5), 3, 3, torch.float32, "channels_last", residual=True)
    scale, shift = norm_conv.norm_scale_shift(x, kw["mean"], kw["rstd"], kw["norm_weight"],
                                              kw["norm_bias"])
    torch.library.opcheck(FWD, (x.requires_grad_(True), scale, shift, 2, SLOPE, kw["weight"],
                                kw["bias"], [1, 1], [1, 1], int(PaddingMode.REFLECT), 1, 1,
                                kw["residual"], EPS))


# ---------------------------------------------------------------------------------------------
# instance_norm_stats


@pytest.mark.parametrize("dtype,layout,shape", [
    (torch.float32, "contiguous", (2, 3, 17, 18)),  # 306 pixels: two tiles of 256 per plane
    (torch.float32, "channels_last", (2, 19, 5, 7)),  # two channel blocks, the second partial
    (torch.bfloat16, "strided", (1, 3, 5, 6)),
    (torch.float64, "contiguous", (2, 2, 3, 7)),
], ids=["fp32-tiles", "fp32-channels_last", "bf16-strided", "fp64"])
def test_instance_norm_stats(dtype, layout, shape):
    x = make_input(shape, dtype, layout, device=DEVICE)
    with poisoned_outputs(), backends.use("triton"):
        mean, rstd = norm_conv.instance_norm_stats(x, EPS)
    assert_all_written(mean, "mean")
    assert_all_written(rstd, "rstd")
    with backends.use("reference"):
        want_mean, want_rstd = norm_conv.instance_norm_stats(x.double(), EPS)
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    assert relative_error(mean, want_mean) <= tol, "mean"
    assert relative_error(rstd, want_rstd) <= tol, "rstd"


def test_instance_norm_stats_gradcheck():
    x = make_input((1, 2, 3, 4), torch.float64, device=DEVICE, requires_grad=True)
    with backends.use("triton"):
        assert torch.autograd.gradcheck(lambda t: norm_conv.instance_norm_stats(t, EPS), (x,),
                                        fast_mode=True)
