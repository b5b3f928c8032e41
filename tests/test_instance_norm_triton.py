"""Triton instance norm + activation kernels (stylize_fast/ops/instance_norm_triton.py) against the
float64 reference: every schedule (one_pass, looped, split) x layout, dtypes, activations and
affine kinds, forward and backward; poisoned outputs, gradcheck, opcheck, torch.compile.

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1):
the schedule thresholds are shrunk so that shapes of a few hundred elements reach every schedule.
"""

from __future__ import annotations

import pytest
import torch

import stylize_fast as sf
from stylize_fast import backends
from stylize_fast.ops import instance_norm_reference as reference
from stylize_fast.ops.common import Activation, stats_dtype
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    assert_half_close,
    make_input,
    poisoned_outputs,
    pytorch_instance_norm_grads,
    tolerance,
)

triton_ops = pytest.importorskip("stylize_fast.ops.instance_norm_triton")

if not backends.available()["triton"]:
    pytest.skip(f"triton backend unavailable: {backends.unavailable_reason('triton')}",
                allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FWD = torch.ops.stylize_fast.instance_norm_fwd_triton
BWD = torch.ops.stylize_fast.instance_norm_bwd_triton
EPS = 1e-5
SLOPE = 0.2  # not the default 0.01, so a kernel ignoring negative_slope fails

# Thresholds small enough that a few dozen elements reach every schedule with one to four
# programs (the interpreter runs each Triton op of each program in Python).
SMALL = dict(ONE_PASS_MAX_ELEMENTS=32, LOOP_CHUNK_ELEMENTS=16, CHANNELS_LAST_BLOCK_C=4,
             SPLIT_BELOW_GROUPS=2, SPLIT_TARGET_PROGRAMS=2, SPLIT_MAX=4)
# Even smaller, for gradcheck (every element of the input is perturbed).
TINY = dict(ONE_PASS_MAX_ELEMENTS=8, LOOP_CHUNK_ELEMENTS=4, CHANNELS_LAST_BLOCK_C=2,
            SPLIT_BELOW_GROUPS=2, SPLIT_TARGET_PROGRAMS=2, SPLIT_MAX=4)

# (schedule, channels_last) -> shape reaching it under SMALL; the comment says how.
SHAPES = {
    ("one_pass", False): (2, 2, 3, 7),  # H*W = 21 -> one 32-element tile per plane
    ("one_pass", True): (2, 3, 2, 3),  # 8 rows x 4 channels (C = 3 padded to 4)
    ("looped", False): (2, 1, 5, 7),  # H*W = 35: chunks of 16, 16, 3
    ("looped", True): (1, 5, 2, 5),  # two channel groups (the second 1 of 4 valid), chunks 4+4+2
    ("split", False): (1, 1, 5, 9),  # segments of 32 (two chunks) and 13 rows
    ("split", True): (1, 3, 3, 5),  # segments of 8 and 7 rows, chunks of 4
}
SCHEDULES = ["one_pass", "looped", "split"]
LAYOUTS = ["contiguous", "channels_last", "strided"]  # strided: a non-contiguous view
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ACTIVATIONS = [Activation.NONE, Activation.RELU, Activation.LEAKY_RELU]
AFFINES = ["none", "channel", "sample"]
# An orthogonal array over (dtype, activation, affine): every pair of levels appears once, in 9
# cases instead of 27.
COMBOS = [(DTYPES[i], ACTIVATIONS[j], AFFINES[(i + j) % 3]) for i in range(3) for j in range(3)]



def _case(s, lay, d, a, af):
    return pytest.param(s, lay, d, a, af,
                        id=f"{s}-{lay}-{str(d).removeprefix('torch.')}-{a.name.lower()}-{af}")


# Every schedule x NCHW / channels_last x the 9 combinations; non-contiguous input (made
# contiguous before launch) with 3 of them, one per dtype.
CASES = [_case(s, lay, *combo) for s in SCHEDULES for lay in LAYOUTS[:2] for combo in COMBOS]
CASES += [_case(s, "strided", *COMBOS[3 * i + (i + k) % 3]) for k, s in enumerate(SCHEDULES)
          for i in range(3)]


@pytest.fixture
def small(monkeypatch):
    for name, value in SMALL.items():
        monkeypatch.setattr(triton_ops, name, value)


@pytest.fixture
def tiny(monkeypatch):
    for name, value in TINY.items():
        monkeypatch.setattr(triton_ops, name, value)


def _shape(schedule: str, layout: str) -> tuple[int, int, int, int]:
    shape = SHAPES[(schedule, layout == "channels_last")]
    n, c, h, w = shape
    got = triton_ops.choose_schedule(n, c, h * w, layout == "channels_last").kind
    assert got == schedule, f"shape {shape} ({layout}) reaches {got!r}, not {schedule!r}"
    return shape


def _affine(kind: str, n: int, c: int, dtype: torch.dtype, requires_grad: bool = False):
    """(weight, bias) of the given kind, in the statistics dtype, as the kernels receive them."""
    if kind == "none":
        return None, None
    shape = {"channel": (c,), "sample": (n, c), "weight-only": (c,), "bias-only": (c,)}[kind]
    w = (torch.rand(shape, dtype=torch.float64) + 0.5).to(DEVICE, dtype)
    b = torch.randn(shape, dtype=torch.float64).to(DEVICE, dtype)
    w = None if kind == "bias-only" else w.requires_grad_(requires_grad)
    b = None if kind == "weight-only" else b.requires_grad_(requires_grad)
    return w, b


def _f64(t: torch.Tensor | None, requires_grad: bool = False) -> torch.Tensor | None:
    return None if t is None else t.detach().double().requires_grad_(requires_grad)


def _reference_forward(x, w, b, activation):
    return reference.instance_norm_forward(_f64(x), _f64(w), _f64(b), EPS, activation, SLOPE)


def _reference_grads(x, w, b, activation, y_kernel, grad_output):
    """float64 reference gradients. The activation's mask is taken from the kernel's own output:
    pre-activations within rounding of zero may have either sign in float32 vs float64."""
    x64, w64, b64 = _f64(x, True), _f64(w, True), _f64(b, True)
    z = reference.instance_norm_forward(x64, w64, b64, EPS, Activation.NONE, SLOPE)[0]
    positive = y_kernel.detach().double() > 0
    if activation == Activation.RELU:
        z = torch.where(positive, z, torch.zeros_like(z))
    elif activation == Activation.LEAKY_RELU:
        z = torch.where(positive, z, z * SLOPE)
    wanted = [t for t in (x64, w64, b64) if t is not None]
    grads = iter(torch.autograd.grad(z, wanted, grad_output.double()))
    return tuple(None if t is None else next(grads) for t in (x64, w64, b64))


def _check_layout(out: torch.Tensor, x: torch.Tensor, name: str) -> None:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert out.is_contiguous(memory_format=torch.channels_last), f"{name} lost channels_last"
    else:
        assert out.is_contiguous(), f"{name} strides {out.stride()} for input {x.stride()}"


def _torch_activation(activation):
    return {Activation.NONE: None, Activation.RELU: torch.relu,
            Activation.LEAKY_RELU: lambda t: torch.nn.functional.leaky_relu(t, SLOPE)}[activation]


def _grad_tolerance(dtype: torch.dtype) -> dict[str, float]:
    # dx is rounded to the input dtype once; its terms are O(rstd) = O(1).
    return tolerance(dtype, scale=2.0)


def _param_tolerance(dtype: torch.dtype) -> dict[str, float]:
    # dweight/dbias stay in the statistics dtype, but are sums of H*W (times N) fp32 terms.
    return tolerance(stats_dtype(dtype), scale=4.0)


# --------------------------------------------------------------------------------------------
# Forward and backward against the reference, every schedule.


@pytest.mark.parametrize("schedule,layout,dtype,activation,affine", CASES)
def test_forward_matches_reference(small, schedule, layout, dtype, activation, affine):
    shape = _shape(schedule, layout)
    x = make_input(shape, dtype, layout, device=DEVICE)
    w, b = _affine(affine, *shape[:2], stats_dtype(dtype))
    with poisoned_outputs():
        y, mean, rstd = FWD(x, w, b, EPS, int(activation), SLOPE)
    for t, name in ((y, "output"), (mean, "mean"), (rstd, "rstd")):
        assert_all_written(t, name)
    y_ref, mean_ref, rstd_ref = _reference_forward(x, w, b, activation)
    assert y.dtype == dtype and mean.dtype == rstd.dtype == stats_dtype(dtype)
    _check_layout(y, x, "output")
    if dtype in (torch.bfloat16, torch.float16):  # the half-precision rule
        torch_y = pytorch_instance_norm_grads(x, w, b, EPS, torch.ones_like(x),
                                              _torch_activation(activation))[0]
        assert_half_close(y, y_ref, terms=x[0, 0].numel(), baseline=torch_y, name="output")
    else:
        assert_close(y, y_ref, **tolerance(dtype), name="output")
    assert_close(mean, mean_ref, **tolerance(stats_dtype(dtype)), name="mean")
    assert_close(rstd, rstd_ref, **tolerance(stats_dtype(dtype)), name="rstd")


@pytest.mark.parametrize("schedule,layout,dtype,activation,affine", CASES)
def test_backward_matches_reference(small, schedule, layout, dtype, activation, affine):
    shape = _shape(schedule, layout)
    x = make_input(shape, dtype, layout, device=DEVICE)
    w, b = _affine(affine, *shape[:2], stats_dtype(dtype))
    # The upstream gradient in another layout than the input: the kernel must re-layout it.
    grad_output = make_input(shape, dtype, "strided", device=DEVICE, mean=0.0, std=1.0)
    y, mean, rstd = FWD(x, w, b, EPS, int(activation), SLOPE)
    with poisoned_outputs():
        dx, dw, db = BWD(grad_output, x, w, b, mean, rstd, int(activation), SLOPE,
                         [True, True, True])
    dx_ref, dw_ref, db_ref = _reference_grads(x, w, b, activation, y, grad_output)
    assert_all_written(dx, "grad_input")
    _check_layout(dx, x, "grad_input")
    assert dx.dtype == dtype
    if dtype in (torch.bfloat16, torch.float16):  # the half-precision rule
        torch_dx = pytorch_instance_norm_grads(x, w, b, EPS, grad_output,
                                               _torch_activation(activation))[1][0]
        assert_half_close(dx, dx_ref, terms=x[0, 0].numel(), baseline=torch_dx,
                          name="grad_input")
    else:
        assert_close(dx, dx_ref, **_grad_tolerance(dtype), name="grad_input")
    for got, ref, param, name in ((dw, dw_ref, w, "grad_weight"), (db, db_ref, b, "grad_bias")):
        if param is None:
            assert got.shape == (0,), f"{name} of a None parameter must be empty"
            continue
        assert_all_written(got, name)
        assert got.shape == param.shape and got.dtype == param.dtype
        assert_close(got, ref, **_param_tolerance(dtype), name=name)


# Default thresholds (no `small` fixture) on a plane of a few thousand elements: the real tile
# sizes and programs (one pass for NCHW, the split schedule for channels_last) in the interpreter.
@pytest.mark.slow
@pytest.mark.parametrize("layout,dtype", [("contiguous", torch.bfloat16),
                                          ("channels_last", torch.float32)])
def test_larger_shape_default_schedule(layout, dtype):
    shape = (3, 16, 67, 75)
    x = make_input(shape, dtype, layout, device=DEVICE)
    w, b = _affine("sample", *shape[:2], stats_dtype(dtype))
    grad_output = make_input(shape, dtype, device=DEVICE, mean=0.0, std=1.0)
    y, mean, rstd = FWD(x, w, b, EPS, int(Activation.LEAKY_RELU), SLOPE)
    dx, dw, db = BWD(grad_output, x, w, b, mean, rstd, int(Activation.LEAKY_RELU), SLOPE,
                     [True, True, True])
    y_ref = _reference_forward(x, w, b, Activation.LEAKY_RELU)[0]
    dx_ref, dw_ref, db_ref = _reference_grads(x, w, b, Activation.LEAKY_RELU, y, grad_output)
    if dtype == torch.bfloat16:
        torch_y, torch_grads = pytorch_instance_norm_grads(
            x, w, b, EPS, grad_output, _torch_activation(Activation.LEAKY_RELU))
        assert_half_close(y, y_ref, terms=x[0, 0].numel(), baseline=torch_y, name="output")
        assert_half_close(dx, dx_ref, terms=x[0, 0].numel(), baseline=torch_grads[0],
                          name="grad_input")
    else:
        assert_close(y, y_ref, **tolerance(dtype), name="output")
        assert_close(dx, dx_ref, **_grad_tolerance(dtype), name="grad_input")
    assert_close(dw, dw_ref, **_param_tolerance(dtype), name="grad_weight")
    assert_close(db, db_ref, **_param_tolerance(dtype), name="grad_bias")


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_float64_forward_and_backward(small, schedule, layout):
    shape = _shape(schedule, layout)
    x = make_input(shape, torch.float64, layout, device=DEVICE)
    w, b = _affine("sample", *shape[:2], torch.float64)
    grad_output = torch.randn(shape, dtype=torch.float64, device=DEVICE)
    y, mean, rstd = FWD(x, w, b, EPS, int(Activation.LEAKY_RELU), SLOPE)
    y_ref, mean_ref, rstd_ref = _reference_forward(x, w, b, Activation.LEAKY_RELU)
    assert mean.dtype == torch.float64
    assert_close(y, y_ref, **tolerance(torch.float64), name="output")
    assert_close(rstd, rstd_ref, **tolerance(torch.float64), name="rstd")
    grads = BWD(grad_output, x, w, b, mean, rstd, int(Activation.LEAKY_RELU), SLOPE,
                [True, True, True])
    refs = _reference_grads(x, w, b, Activation.LEAKY_RELU, y, grad_output)
    for got, ref, name in zip(grads, refs, ("grad_input", "grad_weight", "grad_bias")):
        assert_close(got, ref, **tolerance(torch.float64, scale=100.0), name=name)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_variance_is_centred(small, schedule, layout):
    """mean 100, std 1 in float32: E[x^2] - E[x]^2 loses ~1e-3 of the variance, far outside the
    tolerance; centred chunk moments merged with Chan's formula do not."""
    shape = _shape(schedule, layout)
    x = make_input(shape, torch.float32, layout, device=DEVICE, mean=100.0, std=1.0)
    y, mean, rstd = FWD(x, None, None, EPS, int(Activation.NONE), SLOPE)
    y_ref, mean_ref, rstd_ref = _reference_forward(x, None, None, Activation.NONE)
    assert_close(rstd, rstd_ref, **tolerance(torch.float32), name="rstd")
    assert_close(y, y_ref, **tolerance(torch.float32), name="output")


@pytest.mark.parametrize("schedule,affine", [("looped", "weight-only"), ("split", "bias-only")])
def test_weight_or_bias_only(small, schedule, affine):
    shape = _shape(schedule, "contiguous")
    x = make_input(shape, torch.float32, device=DEVICE)
    w, b = _affine(affine, *shape[:2], torch.float32)
    y, mean, rstd = FWD(x, w, b, EPS, int(Activation.RELU), SLOPE)
    assert_close(y, _reference_forward(x, w, b, Activation.RELU)[0], **tolerance(torch.float32))
    grad_output = torch.randn(shape, device=DEVICE)
    dx, dw, db = BWD(grad_output, x, w, b, mean, rstd, int(Activation.RELU), SLOPE,
                     [True, True, True])
    dx_ref, dw_ref, db_ref = _reference_grads(x, w, b, Activation.RELU, y, grad_output)
    assert_close(dx, dx_ref, **_grad_tolerance(torch.float32), name="grad_input")
    if w is not None:
        assert_close(dw, dw_ref, **_param_tolerance(torch.float32), name="grad_weight")
        assert db.shape == (0,)
    else:
        assert_close(db, db_ref, **_param_tolerance(torch.float32), name="grad_bias")
        assert dw.shape == (0,)


@pytest.mark.parametrize("schedule,mask", [
    ("one_pass", (False, True, True)),
    ("looped", (True, False, False)),
    ("split", (False, True, True)),  # no dx: the split backward skips its apply kernel
    ("split", (False, False, True)),
])
def test_output_mask(small, schedule, mask):
    shape = _shape(schedule, "channels_last")
    x = make_input(shape, torch.float32, "channels_last", device=DEVICE)
    w, b = _affine("channel", *shape[:2], torch.float32)
    grad_output = torch.randn(shape, device=DEVICE)
    y, mean, rstd = FWD(x, w, b, EPS, int(Activation.LEAKY_RELU), SLOPE)
    with poisoned_outputs():
        grads = BWD(grad_output, x, w, b, mean, rstd, int(Activation.LEAKY_RELU), SLOPE,
                    list(mask))
    refs = _reference_grads(x, w, b, Activation.LEAKY_RELU, y, grad_output)
    tols = (_grad_tolerance(torch.float32), _param_tolerance(torch.float32),
            _param_tolerance(torch.float32))
    for wanted, got, ref, tol, name in zip(mask, grads, refs, tols, ("dx", "dweight", "dbias")):
        if wanted:
            assert_all_written(got, name)
            assert_close(got, ref, **tol, name=name)
        else:
            assert got.shape == (0,), f"{name} not requested must be an empty (0,) tensor"


def test_64_bit_indexing_path(small, monkeypatch):
    # Real >= 2**31-element tensors do not fit this machine; lowering the threshold runs the
    # int64 offset code of every kernel.
    monkeypatch.setattr(triton_ops, "INDEX_64_FROM", 0)
    for schedule, layout in (("one_pass", "channels_last"), ("looped", "contiguous"),
                             ("split", "channels_last")):
        shape = _shape(schedule, layout)
        x = make_input(shape, torch.float32, layout, device=DEVICE)
        w, b = _affine("channel", *shape[:2], torch.float32)
        y, mean, rstd = FWD(x, w, b, EPS, int(Activation.RELU), SLOPE)
        assert_close(y, _reference_forward(x, w, b, Activation.RELU)[0],
                     **tolerance(torch.float32), name=f"{schedule}/{layout} output")
        grad_output = torch.randn(shape, device=DEVICE)
        dx = BWD(grad_output, x, w, b, mean, rstd, int(Activation.RELU), SLOPE,
                 [True, False, False])[0]
        dx_ref = _reference_grads(x, w, b, Activation.RELU, y, grad_output)[0]
        assert_close(dx, dx_ref, **_grad_tolerance(torch.float32),
                     name=f"{schedule}/{layout} grad_input")


def test_schedule_heuristic_defaults():
    """The default thresholds pick the schedule the module docstring promises."""
    choose = triton_ops.choose_schedule
    assert choose(4, 64, 64 * 64, False).kind == "one_pass"  # plane fits on chip
    assert choose(4, 128, 256 * 256, False).kind == "looped"  # 512 planes fill the GPU
    big = choose(1, 32, 1024 * 1024, False)  # batch 1, C = 32, 1024^2: few large planes
    assert big.kind == "split" and 1 < big.splits <= triton_ops.SPLIT_MAX
    assert big.segment % big.block_hw == 0 and big.splits * big.segment >= 1024 * 1024
    assert (big.splits - 1) * big.segment < 1024 * 1024  # no empty segment
    cl = choose(1, 32, 1024 * 1024, True)
    assert cl.kind == "split" and cl.block_c == triton_ops.CHANNELS_LAST_BLOCK_C


# --------------------------------------------------------------------------------------------
# Autograd, registration, compile.


@pytest.mark.parametrize("schedule,layout,shape,activation,affine", [
    ("one_pass", "contiguous", (2, 2, 2, 2), "leaky_relu", "sample"),
    ("looped", "contiguous", (1, 2, 3, 4), "relu", "channel"),
    ("looped", "channels_last", (1, 3, 2, 3), None, "none"),
    ("split", "contiguous", (1, 1, 3, 4), "leaky_relu", "channel"),
    ("split", "channels_last", (1, 2, 3, 3), "leaky_relu", "sample"),
], ids=["one_pass", "looped", "looped-channels_last", "split", "split-channels_last"])
def test_gradcheck_float64(tiny, schedule, layout, shape, activation, affine):
    n, c, h, w_ = shape
    assert triton_ops.choose_schedule(n, c, h * w_, layout == "channels_last").kind == schedule
    x = make_input(shape, torch.float64, layout, device=DEVICE, requires_grad=True)
    w, b = _affine(affine, n, c, torch.float64, requires_grad=True)
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def fn(*args):
        x, w, b = args[0], *(args[1:] if len(args) == 3 else (None, None))
        return sf.functional.instance_norm(x, w, b, EPS, activation, SLOPE)

    with sf.backends.use("triton"):
        assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def test_autograd_matches_backward_op(small):
    shape = _shape("split", "contiguous")
    x = make_input(shape, torch.float32, device=DEVICE, requires_grad=True)
    w, b = _affine("channel", *shape[:2], torch.float32, requires_grad=True)
    g = torch.randn(shape, device=DEVICE)
    with sf.backends.use("triton"):
        y = sf.functional.instance_norm(x, w, b, EPS, "leaky_relu", SLOPE)
    y.backward(g)
    _, mean, rstd = FWD(x.detach(), w.detach(), b.detach(), EPS, 2, SLOPE)
    dx, dw, db = BWD(g, x.detach(), w.detach(), b.detach(), mean, rstd, 2, SLOPE,
                     [True, True, True])
    torch.testing.assert_close(x.grad, dx, rtol=0, atol=0)
    torch.testing.assert_close(w.grad, dw, rtol=0, atol=0)
    torch.testing.assert_close(b.grad, db, rtol=0, atol=0)


def _op_args(shape=(2, 3, 5, 7)):
    x = make_input(shape, torch.float32, device=DEVICE)
    w, b = _affine("sample", *shape[:2], torch.float32)
    return x, w, b


def test_opcheck_forward():
    x, w, b = _op_args()
    torch.library.opcheck(FWD, (x.contiguous(memory_format=torch.channels_last), None, None,
                                EPS, 2, SLOPE))
    # requires_grad inputs make opcheck test the autograd registration too
    torch.library.opcheck(FWD, (x.requires_grad_(), w.requires_grad_(), b, EPS, 1, SLOPE))


def test_opcheck_backward():
    x, w, b = _op_args()
    _, mean, rstd = FWD(x, w, b, EPS, 2, SLOPE)
    g = torch.randn_like(x)
    torch.library.opcheck(BWD, (g, x, w, b, mean, rstd, 2, SLOPE, [True, True, True]))
    torch.library.opcheck(BWD, (g, x, None, b, mean, rstd, 1, SLOPE, [True, False, True]))


def test_torch_compile_fullgraph():
    x, w, b = _op_args()

    def fn(x, w, b):
        return sf.functional.instance_norm(x, w, b, EPS, "relu", SLOPE) * 2.0

    # On CPU the interpreted op is opaque to the compiler (see the module docstring), so
    # Inductor's C++ code generation would only compile the `* 2.0`: aot_eager traces the same
    # graph without a C++ build.
    backend = "inductor" if DEVICE == "cuda" else "aot_eager"
    with sf.backends.use("triton"):
        torch._dynamo.reset()
        compiled = torch.compile(fn, fullgraph=True, backend=backend)
        y = compiled(x, w, b)
    y_ref = _reference_forward(x, w, b, Activation.RELU)[0] * 2.0
    assert_close(y, y_ref, **tolerance(torch.float32, scale=2.0))


def test_backend_registration():
    assert "triton" in sf.backends.implementations("instance_norm")
    if DEVICE == "cpu":
        assert sf.backends.triton_interpreted()
    assert sf.backends.available()["triton"]
    x = make_input((1, 2, 3, 3), torch.float32, device=DEVICE)
    with sf.backends.use("triton"):
        assert sf.backends.select("instance_norm", x, None, None)[0] == "triton"
    if DEVICE == "cpu":
        # CPU tensors take triton only when forced.
        assert sf.backends.select("instance_norm", x, None, None)[0] != "triton"
    assert triton_ops.supports(x) is None
    assert "dtype" in triton_ops.supports(x.to(torch.int32))


def test_cpu_tensors_rejected_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    reason = triton_ops.supports(torch.ones(1, 1, 2, 2))
    assert reason is not None and "TRITON_INTERPRET" in reason


@pytest.mark.parametrize("call,error,match", [
    (lambda x, w, s: FWD(x[0], None, None, EPS, 0, SLOPE), AssertionError, "input must have 4"),
    (lambda x, w, s: FWD(x.int(), None, None, EPS, 0, SLOPE), AssertionError, "input must be float"),
    (lambda x, w, s: FWD(x, w[:2], None, EPS, 0, SLOPE), AssertionError, r"weight must have shape"),
    (lambda x, w, s: FWD(x, None, w.double(), EPS, 0, SLOPE), AssertionError, "bias must have the st"),
    (lambda x, w, s: FWD(x, None, None, EPS, 3, SLOPE), AssertionError, "activation must be"),
    (lambda x, w, s: FWD(x, None, None, -1.0, 0, SLOPE), AssertionError, "eps must be"),
    (lambda x, w, s: BWD(x[:1], x, None, None, *s, 0, SLOPE, [True, True, True]), AssertionError,
     "grad_output must match"),
    (lambda x, w, s: BWD(x, x, None, None, s[0][:1], s[1], 0, SLOPE, [True, True, True]),
     AssertionError, "mean must be"),
    (lambda x, w, s: BWD(x, x, None, None, s[0], s[1].double(), 0, SLOPE, [True, True, True]),
     AssertionError, "rstd must be"),
], ids=["3d", "int", "weight-shape", "bias-dtype", "activation", "eps", "grad-shape",
        "mean-shape", "rstd-dtype"])
def test_bad_input_errors(call, error, match):
    x = make_input((2, 3, 4, 4), torch.float32, device=DEVICE)
    w = torch.ones(3, device=DEVICE)
    stats = FWD(x, None, None, EPS, 0, SLOPE)[1:]
    with pytest.raises(error, match=match):
        call(x, w, stats)


_COMPILE_SCRIPT = """
import json, sys, torch
from stylize_fast.ops.instance_norm_triton import compile_report
rows = compile_report(90, (torch.float32, torch.float64)) + compile_report(80, (torch.bfloat16,))
print(json.dumps(rows))
"""


def test_kernels_compile_for_sm80_and_sm90_without_spills():
    """The interpreter does not run Triton's compiler: compile every kernel for real GPU targets
    (no GPU needed) in a process without TRITON_INTERPRET, and check no register spills."""
    import json
    import os
    import subprocess
    import sys

    nvidia = pytest.importorskip("triton.backends.nvidia")
    if not os.path.exists(os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")):
        pytest.skip("triton's bundled cuobjdump is missing")
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    done = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(rows) == 3 * 2 * 9  # dtypes x (NCHW, channels_last) x kernels
    spilling = [r for r in rows if r["local"] or r["stack"]]
    assert not spilling, f"kernels spilling registers: {spilling}"
