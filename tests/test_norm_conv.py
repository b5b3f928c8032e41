"""norm_conv2d (normalize-on-load convolution) and the statistics it consumes, on the CPU
kernel, against the float64 reference (instance norm with affine and activation, F.interpolate,
F.pad, F.conv2d, + residual, activation, torch.var_mean): every forced CPU algorithm (Winograd
reads through the norm and gathers statistics in its epilogue, direct normalises its packed rows,
the library's layers build the padded normalised input once), every padding mode, with and
without upsampling / residual / statistics, three layouts, every instruction-set level, float32
/ bfloat16 / float64; poisoned outputs; deterministic statistics; statistics of an offset
input; gradcheck of the op and of instance_norm_stats; float32 gradients; opcheck; argument
errors.
"""

from __future__ import annotations

import pytest
import torch

import stylize_fast as sf
from stylize_fast.ops import norm_conv
from stylize_fast.ops import norm_conv_reference as reference
from stylize_fast.testing import (
    assert_all_written,
    assert_half_close,
    make_input,
    poisoned_outputs,
    relative_error,
)

from .conv_helpers import conv_params

HAS_CPU = "cpu" in sf.backends.implementations("norm_conv2d")
needs_cpu = pytest.mark.skipif(not HAS_CPU, reason="no CPU norm_conv2d kernel")
pytestmark = pytest.mark.usefixtures("one_thread")

MODES = ["reflect", "replicate", "zeros"]
LEVELS = ["default", "avx2", "avx512", "avx512_bf16"]
# (algorithm, C, O, kernel, stride): a geometry each CPU algorithm handles.
GEOMETRIES = {
    "winograd": (32, 20, 3, 1),
    "direct": (24, 3, 9, 1),
    "library": (12, 16, 3, 2),
}


def _case(c, o, k, stride, *, n=2, h=13, w=11, dtype=torch.float32, layout="channels_last",
          up=1, residual=False, norm_act="relu", seed=0):
    """Arguments of one call: raw input with non-zero mean, its statistics, a norm affine, conv
    parameters, an optional residual."""
    g = torch.Generator().manual_seed(seed)
    x = make_input((n, c, h, w), dtype, layout, generator=g, mean=1.5, std=3.0)
    mean, rstd = reference.instance_norm_stats_forward(x, 1e-5)
    nw = torch.randn(c, generator=g, dtype=torch.float64).float() * 0.5 + 1.0
    nb = torch.randn(c, generator=g, dtype=torch.float64).float() * 0.5
    wt, b = conv_params(c, o, k, dtype, seed=seed + 1)
    ho = (h * up + 2 * (k // 2) - k) // stride + 1
    wo = (w * up + 2 * (k // 2) - k) // stride + 1
    res = make_input((n, o, ho, wo), dtype, layout, generator=g) if residual else None
    return dict(input=x, weight=wt, bias=b, stride=stride, padding=k // 2, mean=mean, rstd=rstd,
                norm_weight=nw, norm_bias=nb, norm_activation=norm_act, upsample=up,
                residual=res)


def _float64(kwargs):
    return {k: (v.detach().double() if isinstance(v, torch.Tensor) else v)
            for k, v in kwargs.items()}


def _call(backend, kwargs, mode, **extra):
    args = dict(kwargs)
    x, wt, b = args.pop("input"), args.pop("weight"), args.pop("bias")
    stride, padding = args.pop("stride"), args.pop("padding")
    with sf.backends.use(backend):
        return sf.functional.norm_conv2d(x, wt, b, stride, padding, mode, **args, **extra)


def _check(actual, expected, dtype, name):
    if dtype in (torch.bfloat16, torch.float16):
        assert_half_close(actual, expected, terms=200, name=name)
        return
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    err = relative_error(actual, expected)
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.1e}"


@needs_cpu
@pytest.mark.parametrize("algorithm", list(GEOMETRIES))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "strided"])
def test_forward_matches_reference(algorithm, mode, layout):
    c, o, k, stride = GEOMETRIES[algorithm]
    variants = [dict(up=1, residual=False, stats=True, norm_act="relu"),
                dict(up=1, residual=True, stats=True, norm_act="leaky_relu"),
                dict(up=2 if stride == 1 else 1, residual=True, stats=False, norm_act=None)]
    for i, v in enumerate(variants):
        kwargs = _case(c, o, k, stride, layout=layout, up=v["up"], residual=v["residual"],
                       norm_act=v["norm_act"], seed=i)
        extra = dict(stats_eps=1e-5) if v["stats"] else {}
        act = "relu" if i == 1 else None
        with sf.config.override(conv_algo=algorithm), poisoned_outputs():
            got = _call("cpu", kwargs, mode, activation=act, **extra)
        expected = _call("reference", _float64(kwargs), mode, activation=act, **extra)
        got, expected = (got, expected) if v["stats"] else ((got,), (expected,))
        assert_all_written(got[0])
        assert got[0].is_contiguous(memory_format=torch.channels_last) == (
            layout == "channels_last")
        for name, a, e in zip(("output", "mean", "rstd"), got, expected):
            _check(a, e, torch.float32, f"{algorithm} {mode} {layout} {v} {name}")


@needs_cpu
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("algorithm", list(GEOMETRIES))
def test_every_instruction_set_level(level, algorithm):
    c, o, k, stride = GEOMETRIES[algorithm]
    kwargs = _case(c, o, k, stride, residual=True, norm_act="leaky_relu", seed=5)
    with sf.config.override(conv_algo=algorithm, cpu_isa=level):
        got = _call("cpu", kwargs, "reflect", stats_eps=1e-5)
    expected = _call("reference", _float64(kwargs), "reflect", stats_eps=1e-5)
    for name, a, e in zip(("output", "mean", "rstd"), got, expected):
        _check(a, e, torch.float32, f"{level} {algorithm} {name}")


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
@pytest.mark.parametrize("algorithm", list(GEOMETRIES))
def test_other_dtypes(dtype, algorithm):
    c, o, k, stride = GEOMETRIES[algorithm]
    kwargs = _case(c, o, k, stride, dtype=dtype, residual=True, up=2 if stride == 1 else 1)
    with sf.config.override(conv_algo=algorithm if dtype != torch.float64 else "auto"):
        got, mean, rstd = _call("cpu", kwargs, "replicate", stats_eps=1e-5)
    # float64 on the same rounded inputs (statistics, affine: the stats dtype, float32 here).
    expected, emean, erstd = _call("reference", _float64(kwargs), "replicate", stats_eps=1e-5)
    assert got.dtype == dtype
    _check(got, expected, dtype, f"{dtype} {algorithm} output")
    stats_tol = 1e-12 if dtype == torch.float64 else 2e-2  # statistics of a rounded output
    assert relative_error(mean, emean) <= stats_tol
    assert relative_error(rstd, erstd) <= stats_tol


@needs_cpu
def test_plain_convolution_with_statistics_and_residual():
    """No norm (mean=None): a padded convolution whose epilogue adds a residual and gathers the
    next norm's statistics."""
    kwargs = _case(32, 24, 3, 1, residual=True)
    for key in ("mean", "rstd", "norm_weight", "norm_bias", "norm_activation"):
        kwargs.pop(key)
    with sf.config.override(conv_algo="winograd"):
        got = _call("cpu", kwargs, "zeros", stats_eps=1e-3, activation="relu")
    expected = _call("reference", _float64(kwargs), "zeros", stats_eps=1e-3, activation="relu")
    for name, a, e in zip(("output", "mean", "rstd"), got, expected):
        _check(a, e, torch.float32, name)


@needs_cpu
@pytest.mark.parametrize("algorithm", ["winograd", "direct", "library"])
def test_statistics_deterministic_and_offset_safe(algorithm):
    """A large common offset (mean 1e3 x the spread) must not cost the variance its digits, and
    the same call gives the same bits whatever the thread count."""
    c, o, k, stride = GEOMETRIES[algorithm]
    for offset_in in ("residual", "bias"):  # with a residual: the statistics pass; without:
        kwargs = _case(c, o, k, stride, n=3, h=40, w=36,  # the kernel's own epilogue
                       residual=offset_in == "residual")
        kwargs[offset_in] = kwargs[offset_in] + 1000.0
        threads = torch.get_num_threads()
        results = []
        try:
            for t in (1, 2, 1):
                torch.set_num_threads(t)
                with sf.config.override(conv_algo=algorithm):
                    results.append(_call("cpu", kwargs, "reflect", stats_eps=1e-5))
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(results[0][1], results[2][1])
        assert torch.equal(results[0][2], results[2][2])
        expected = _call("reference", _float64(kwargs), "reflect", stats_eps=1e-5)
        for got in results:
            assert relative_error(got[1], expected[1]) <= 1e-6
            assert relative_error(got[2], expected[2]) <= 1e-4, f"variance lost ({offset_in})"


@needs_cpu
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("level", LEVELS)
def test_instance_norm_stats_and_apply(layout, dtype, level):
    # 19 channels x 45 pixels: flat runs of whole and partial vectors, several runs per image.
    x = make_input((2, 19, 5, 9), dtype, layout, mean=50.0, std=2.0)
    with sf.backends.use("cpu"):
        mean, rstd = sf.functional.instance_norm_stats(x, 1e-5)
    emean, erstd = reference.instance_norm_stats_forward(x.double(), 1e-5)
    assert relative_error(mean, emean) <= 1e-6 and relative_error(rstd, erstd) <= 1e-5
    scale, shift = norm_conv.norm_scale_shift(x, mean, rstd, torch.rand(19) + 0.5, torch.randn(19))
    residual = make_input(x.shape, dtype, layout)
    for act in (0, 1, 2):
        with sf.backends.use("cpu"), sf.config.override(cpu_isa=level), poisoned_outputs():
            got = norm_conv.instance_norm_apply(x, scale, shift, act, 0.2, residual)
        assert_all_written(got)
        expected = reference.normalize(x.double(), scale.double(), shift.double(), act, 0.2) + \
            residual.double()
        if dtype == torch.bfloat16:
            assert_half_close(got, expected, terms=2)
        else:
            assert relative_error(got, expected) <= 1e-6
        assert got.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


@needs_cpu
def test_gradcheck_float64():
    kwargs = _case(3, 4, 3, 1, n=2, h=5, w=4, dtype=torch.float64, residual=True, up=2,
                   norm_act="leaky_relu")
    x = kwargs["input"].detach().requires_grad_()
    nw = kwargs["norm_weight"].double().requires_grad_()
    nb = kwargs["norm_bias"].double().requires_grad_()
    wt = kwargs["weight"].detach().requires_grad_()
    b = kwargs["bias"].detach().requires_grad_()
    res = kwargs["residual"].detach().requires_grad_()

    def fn(x, nw, nb, wt, b, res):
        # The statistics through the differentiable stats op: the whole norm -> conv chain.
        mean, rstd = sf.functional.instance_norm_stats(x, 1e-5)
        return sf.functional.norm_conv2d(x, wt, b, 1, 1, "reflect", mean=mean, rstd=rstd,
                                         norm_weight=nw, norm_bias=nb,
                                         norm_activation="leaky_relu", negative_slope=0.1,
                                         upsample=2, residual=res, activation="relu")

    with sf.backends.use("cpu"):
        assert torch.autograd.gradcheck(fn, (x, nw, nb, wt, b, res), atol=1e-7)


@needs_cpu
def test_float32_gradients_match_float64_reference():
    kwargs = _case(32, 20, 3, 1, n=1, h=12, w=10, residual=True)
    leaves = {k: kwargs[k].detach().clone().requires_grad_()
              for k in ("input", "norm_weight", "norm_bias", "weight", "bias", "residual")}

    def run(backend, tensors):
        mean, rstd = sf.functional.instance_norm_stats(tensors["input"], 1e-5)
        with sf.backends.use(backend):
            out = sf.functional.norm_conv2d(
                tensors["input"], tensors["weight"], tensors["bias"], 1, 1, "zeros", mean=mean,
                rstd=rstd, norm_weight=tensors["norm_weight"], norm_bias=tensors["norm_bias"],
                norm_activation="relu", residual=tensors["residual"], activation="relu")
        g = torch.Generator().manual_seed(9)
        upstream = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
        return torch.autograd.grad(out, list(tensors.values()), upstream)

    with sf.config.override(conv_algo="winograd"):
        got = run("cpu", leaves)
    leaves64 = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
    expected = run("reference", leaves64)
    for name, a, e in zip(leaves, got, expected):
        err = relative_error(a, e)
        assert err <= 2e-5, f"grad {name}: {err:.3e}"


@needs_cpu
def test_opcheck():
    kwargs = _case(16, 16, 3, 1, n=1, h=6, w=5, residual=True)
    scale, shift = norm_conv.norm_scale_shift(kwargs["input"], kwargs["mean"], kwargs["rstd"],
                                              kwargs["norm_weight"], kwargs["norm_bias"])
    args = (kwargs["input"], scale, shift, 1, 0.01, kwargs["weight"], kwargs["bias"], [1, 1],
            [1, 1], 1, 1, 1, kwargs["residual"], 1e-5)
    torch.library.opcheck(torch.ops.stylize_fast.norm_conv2d_fwd, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_aot_dispatch_static"))
    torch.library.opcheck(torch.ops.stylize_fast.instance_norm_stats, (kwargs["input"], 1e-5))
    torch.library.opcheck(torch.ops.stylize_fast.instance_norm_apply,
                          (kwargs["input"], scale, shift, 1, 0.01, None),
                          test_utils=("test_schema", "test_faketensor"))


def test_bad_arguments_name_the_argument():
    kwargs = _case(4, 5, 3, 1, n=2, h=6, w=6)
    x, wt = kwargs["input"], kwargs["weight"]
    mean, rstd = kwargs["mean"], kwargs["rstd"]
    f = sf.functional.norm_conv2d
    with pytest.raises(ValueError, match="mean must have shape"):
        f(x, wt, None, 1, 1, mean=mean[:1], rstd=rstd)
    with pytest.raises(ValueError, match="rstd must have shape"):
        f(x, wt, None, 1, 1, mean=mean, rstd=rstd.reshape(-1))
    with pytest.raises(ValueError, match="both mean and rstd"):
        f(x, wt, None, 1, 1, mean=mean)
    with pytest.raises(ValueError, match="upsample=2 needs stride 1"):
        f(x, wt, None, 2, 1, mean=mean, rstd=rstd, upsample=2)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        f(x, wt, None, 1, 1, "circular", mean=mean, rstd=rstd)
    with pytest.raises(ValueError, match="residual must have the output's shape"):
        f(x, wt, None, 1, 1, mean=mean, rstd=rstd, residual=torch.zeros(2, 5, 3, 3))
    with pytest.raises(ValueError, match="norm_activation='relu' needs the statistics"):
        f(x, wt, None, 1, 1, norm_activation="relu")
    with pytest.raises(ValueError, match="norm_activation must be"):
        f(x, wt, None, 1, 1, mean=mean, rstd=rstd, norm_activation="gelu")
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        f(x, wt, None, 1, 1, mean=mean, rstd=rstd, activation="tanh")
    with pytest.raises(ValueError, match="stats_eps must be a non-negative number"):
        f(x, wt, None, 1, 1, mean=mean, rstd=rstd, stats_eps=-1.0)
    with pytest.raises(ValueError, match="norm_weight must have shape"):
        f(x, wt, None, 1, 1, mean=mean, rstd=rstd, norm_weight=torch.ones(3))
    with pytest.raises(ValueError, match="norm_weight / norm_bias need the input's statistics"):
        f(x, wt, None, 1, 1, norm_weight=torch.ones(4))
    with pytest.raises(ValueError, match="eps must be a non-negative number"):
        sf.functional.instance_norm_stats(x, -1e-5)
