"""sf.functional.padded_conv2d on every backend runnable here, against the float64 reference
(F.pad + F.conv2d); opcheck / gradcheck / torch.compile of the compiled ops; the PaddedConv2d
layer. The fuse pass is tested in test_fuse.py.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stylize_fast as sf
from stylize_fast.ops import padded_conv_reference as reference
from stylize_fast.ops.common import padding_mode_code
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    assert_half_close,
    assert_matches,
    make_input,
    poisoned_outputs,
    pytorch_padded_conv2d_grads,
    tolerance,
)

from .conftest import LARGE, backend_devices, interpreted

BACKENDS = backend_devices("padded_conv2d")
# The reference is the ground truth: value checks run the kernels (the reference against itself
# would be the same computation twice; test_references.py checks the reference itself).
KERNELS = [p for p in BACKENDS if p.values[0] != "reference"] or BACKENDS
COMPILED = [p for p in BACKENDS if p.values[0] in ("cpu", "cuda")]
MODES = ["reflect", "replicate", "zeros"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
LAYOUTS = ["contiguous", "channels_last", "strided"]

# (N, C, H, W), padding or None for kernel_size // 2. Odd sizes everywhere.
CASES = [
    pytest.param((1, 3, 11, 13), None, id="odd"),
    pytest.param((4, 2, 9, 10), None, id="batch4"),
    pytest.param((1, 2, 5, 6), (4, 5), id="pad=size-1"),
]
# The Triton interpreter runs every program on the CPU in Python: one small case is enough.
INTERPRETED_CASES = [pytest.param((1, 2, 5, 6), (4, 5), id="pad=size-1")]


def _params(shape, k, out_channels=4, dtype=torch.float32, device="cpu", bias=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    scale = (shape[1] * k * k) ** -0.5  # keep outputs O(1), as nn.Conv2d's init does
    w = (torch.randn(out_channels, shape[1], k, k, generator=g, dtype=torch.float64) * scale)
    b = torch.randn(out_channels, generator=g, dtype=torch.float64) if bias else None
    return w.to(device, dtype), (b.to(device, dtype) if bias else None)


def _double(t):
    # Not detached: the backward tests differentiate the reference.
    return None if t is None else t.double()


def _reference(x, w, b, stride, padding, mode):
    pair = (padding, padding) if isinstance(padding, int) else padding
    st = (stride, stride) if isinstance(stride, int) else stride
    return reference.padded_conv2d_forward(_double(x), _double(w), _double(b), st, pair,
                                           padding_mode_code(mode))


def _run(backend, *args, **kwargs):
    with sf.backends.use(backend):
        return sf.functional.padded_conv2d(*args, **kwargs)


def _expected_format(x):
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _check_layout(y, x):
    fmt = _expected_format(x)
    assert y.is_contiguous(memory_format=fmt), f"output strides {y.stride()} for input " \
        f"strides {x.stride()}: expected {fmt}"


def _skip_slow(backend, device, k, shape):
    if interpreted(backend, device) and (k == 9 or shape[0] > 1):
        pytest.skip("too slow for the Triton CPU interpreter")


# ---------------------------------------------------------------------------------------------
# Forward


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [1, 3, 9])
@pytest.mark.parametrize("shape,padding", CASES)
def test_forward_matches_reference(backend, device, mode, stride, k, shape, padding):
    if interpreted(backend, device) and shape != (1, 2, 5, 6):
        pytest.skip("too slow for the Triton CPU interpreter; pad=size-1 covers it")
    padding = k // 2 if padding is None else padding
    x = make_input(shape, device=device)
    w, b = _params(shape, k, device=device)
    y = _run(backend, x, w, b, stride, padding, mode)
    assert_close(y, _reference(x, w, b, stride, padding, mode), **tolerance(torch.float32))


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_forward_layouts_and_dtypes(backend, device, layout, dtype, mode):
    shape, k, stride, padding = (2, 5, 9, 7), 3, (1, 2), (2, 1)
    if interpreted(backend, device):
        shape = (1, 3, 6, 5)
    x = make_input(shape, dtype, layout, device=device)
    w, b = _params(shape, k, out_channels=6, dtype=dtype, device=device)
    with poisoned_outputs():
        y = _run(backend, x, w, b, stride, padding, mode)
    assert y.dtype == dtype
    assert_all_written(y)
    _check_layout(y, x)
    # The reference sees the same (rounded) inputs: the tolerance covers accumulation and the
    # output's rounding; half types by the half-precision rule against PyTorch's own op.
    baseline = pytorch_padded_conv2d_grads(x, w, b, stride, padding, mode,
                                           torch.ones(y.shape, dtype=dtype, device=device))[0]
    assert_matches(y, _reference(x, w, b, stride, padding, mode), terms=shape[1] * k * k,
                   baseline=baseline, scale=4.0)


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("mode", MODES)
def test_forward_no_bias_rectangular_kernel(backend, device, mode):
    x = make_input((1, 3, 8, 9), device=device)
    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 3, 3, 5, generator=g).to(device) * 0.2
    y = _run(backend, x, w, None, (2, 1), (1, 2), mode)
    assert_close(y, _reference(x, w, None, (2, 1), (1, 2), mode), **tolerance(torch.float32))


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("mode", MODES)
def test_forward_generator_layer(backend, device, mode):
    # A real layer size (Johnson's last conv at a small resolution): many border pixels and a
    # large interior, more channels than any band.
    if interpreted(backend, device):
        pytest.skip("too slow for the Triton CPU interpreter")
    shape = (1, 32, 96, 80) if not LARGE else (1, 32, 512, 512)
    x = make_input(shape, device=device)
    w, b = _params(shape, 9, out_channels=3, device=device)
    y = _run(backend, x, w, b, 1, 4, mode)
    assert_close(y, _reference(x, w, b, 1, 4, mode), **tolerance(torch.float32, 2.0))


# ---------------------------------------------------------------------------------------------
# Backward


def _grads(y, inputs, gy):
    return torch.autograd.grad(y, [t for t in inputs if t is not None], gy)


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [1, 3, 9])
@pytest.mark.parametrize("shape,padding", CASES)
def test_backward_matches_reference(backend, device, mode, stride, k, shape, padding):
    if interpreted(backend, device) and shape != (1, 2, 5, 6):
        pytest.skip("too slow for the Triton CPU interpreter; pad=size-1 covers it")
    padding = k // 2 if padding is None else padding
    x = make_input(shape, device=device, requires_grad=True)
    w, b = _params(shape, k, device=device)
    w.requires_grad_(True)
    b.requires_grad_(True)
    y = _run(backend, x, w, b, stride, padding, mode)
    gy = torch.randn(y.shape, dtype=torch.float64).to(device)
    got = _grads(y, (x, w, b), gy.float())
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    want = _grads(_reference(xd, wd, bd, stride, padding, mode), (xd, wd, bd), gy)
    # Gradients sum over more terms than the output (weight: N * HO * WO products).
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        assert_close(a, e, name=name, **tolerance(torch.float32, 10.0))


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("needs", ["all", "input", "weight", "bias-less"])
def test_backward_layouts_dtypes_and_masks(backend, device, layout, dtype, needs):
    shape, k, stride, padding = (2, 4, 7, 9), 3, 2, (2, 1)
    if interpreted(backend, device):
        shape = (1, 2, 5, 6)
    x = make_input(shape, dtype, layout, device=device, requires_grad=needs != "weight")
    w, b = _params(shape, k, out_channels=5, dtype=dtype, device=device,
                   bias=needs != "bias-less")
    w.requires_grad_(needs != "input")
    if b is not None:
        b.requires_grad_(needs == "all")
    inputs = [t for t in (x, w, b) if t is not None and t.requires_grad]
    with poisoned_outputs():
        y = _run(backend, x, w, b, stride, padding, "reflect")
        gy = make_input(y.shape, dtype, device=device)
        got = torch.autograd.grad(y, inputs, gy)
    ref_inputs = [t.detach().double().requires_grad_(t.requires_grad) if t is not None else None
                  for t in (x, w, b)]
    yd = _reference(*ref_inputs, stride, padding, "reflect")
    want = torch.autograd.grad(yd, [t for t in ref_inputs if t is not None and t.requires_grad],
                               gy.double())
    torch_grads = [g for g in pytorch_padded_conv2d_grads(x, w, b, stride, padding, "reflect",
                                                           gy)[1] if g is not None]
    torch_grads = [g for g, t in zip(torch_grads, [t for t in (x, w, b) if t is not None])
                   if t.requires_grad]
    for a, e, t, base in zip(got, want, inputs, torch_grads):
        assert_all_written(a, "gradient")
        assert a.shape == t.shape and a.dtype == dtype
        assert_matches(a, e, name="gradient", terms=y.numel(), baseline=base,
                       scale=20.0)
    if x.requires_grad:
        _check_layout(got[0], x)


# Half-precision gradients of every CPU algorithm (forced as STYLIZE_FAST_CONV_ALGO does) on
# layers it runs: (dtype, algorithm, (C, O, k), stride). Johnson's last layer (few outputs, 9x9)
# is where the input gradient once lost 3-5x PyTorch's accuracy to bfloat16 roundings.
_HALF_ALGO_CASES = [
    *[(dt, "library", layer, s) for dt in (torch.bfloat16, torch.float16)
      for layer in ((16, 3, 9), (16, 16, 3), (3, 16, 9)) for s in (1, 2)],
    *[(torch.bfloat16, "direct", (16, 3, 9), s) for s in (1, 2)],
    (torch.bfloat16, "direct", (3, 16, 9), 2),
    (torch.bfloat16, "winograd", (16, 16, 3), 1),
    *[(torch.float16, "direct", layer, s) for layer in ((16, 3, 9), (3, 16, 9)) for s in (1, 2)],
    (torch.float16, "direct", (16, 16, 3), 2),
]


@pytest.mark.skipif(not any(p.values[0] == "cpu" for p in BACKENDS), reason="no CPU kernel")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype,algorithm,layer,stride", [
    pytest.param(*case, id=f"{str(case[0])[6:]}-{case[1]}-{case[2][0]}to{case[2][1]}k{case[2][2]}"
                 f"-s{case[3]}") for case in _HALF_ALGO_CASES])
def test_half_gradients_every_cpu_algorithm(monkeypatch, mode, layout, dtype, algorithm, layer,
                                            stride):
    monkeypatch.setitem(sf.config.options, "conv_algo", algorithm)
    c, o, k = layer
    shape, padding = (2, c, 13, 15), k // 2
    x = make_input(shape, dtype, layout, requires_grad=True)
    w, b = _params(shape, k, out_channels=o, dtype=dtype)
    w.requires_grad_(True)
    b.requires_grad_(True)
    from stylize_fast.ops.padded_conv import cpu_algorithm
    assert cpu_algorithm(x, w, (stride, stride), (padding, padding),
                         padding_mode_code(mode)) == algorithm
    y = _run("cpu", x, w, b, stride, padding, mode)
    gy = make_input(y.shape, dtype, generator=torch.Generator().manual_seed(5), mean=0.0)
    got = torch.autograd.grad(y, (x, w, b), gy)
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    yd = _reference(*leaves, stride, padding, mode)
    want = torch.autograd.grad(yd, leaves, gy.double())
    torch_y, torch_grads = pytorch_padded_conv2d_grads(x, w, b, stride, padding, mode, gy)
    assert_half_close(y, yd, terms=c * k * k, baseline=torch_y, name=f"{algorithm} output")
    for name, a, e, base, terms in zip(("grad_input", "grad_weight", "grad_bias"), got, want,
                                       torch_grads, (o * k * k, y[:, 0].numel(), y[:, 0].numel())):
        assert a.dtype == dtype
        assert_half_close(a, e, terms=terms, baseline=base, name=f"{algorithm} {name}")


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stride,k,padding", [(1, 3, (1, 2)), (2, 3, (2, 1)), (1, 1, (1, 1)),
                                              (2, 5, (4, 3))])
def test_gradcheck(backend, device, mode, stride, k, padding):
    if mode == "reflect" and max(padding) >= 5:
        pytest.skip("reflect needs padding < size")
    if interpreted(backend, device) and k == 5:
        pytest.skip("too slow for the Triton CPU interpreter")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 5, 6, generator=g, dtype=torch.float64).to(device).requires_grad_()
    w = torch.randn(2, 2, k, k, generator=g, dtype=torch.float64).to(device).requires_grad_()
    b = torch.randn(2, generator=g, dtype=torch.float64).to(device).requires_grad_()
    with sf.backends.use(backend):
        # The interpreted Triton kernels are slow: fast mode checks one random direction
        # (test_padded_conv_triton.py covers them too).
        assert torch.autograd.gradcheck(
            lambda x, w, b: sf.functional.padded_conv2d(x, w, b, stride, padding, mode),
            (x, w, b), eps=1e-6, atol=1e-8, fast_mode=interpreted(backend, device))


@pytest.mark.parametrize("backend,device", COMPILED)
def test_backward_deterministic(backend, device):
    x = make_input((2, 4, 13, 11), device=device, requires_grad=True)
    w, b = _params((2, 4, 13, 11), 3, device=device)
    w.requires_grad_(True)

    def grads():
        y = _run(backend, x, w, b, 1, 2, "reflect")
        return torch.autograd.grad(y, (x, w), torch.ones_like(y))

    first, second = grads(), grads()
    for a, c in zip(first, second):
        assert torch.equal(a, c)


# ---------------------------------------------------------------------------------------------
# Op registration, torch.compile


@pytest.mark.parametrize("backend,device", COMPILED)
@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(backend, device, mode, layout):
    op = torch.ops.stylize_fast
    for bias, grad in itertools.product((True, False), (True, False)):
        x = make_input((2, 3, 7, 6), torch.float64, layout, device=device, requires_grad=grad)
        w, b = _params((2, 3, 7, 6), 3, dtype=torch.float64, device=device, bias=bias)
        w.requires_grad_(grad)
        torch.library.opcheck(op.padded_conv2d_fwd.default, (x, w, b, [2, 1], [2, 1], mode))
    gy = make_input((2, 4, 5, 6), torch.float64, layout, device=device)
    for mask in ([True, True, True], [True, False, False], [False, True, False]):
        torch.library.opcheck(op.padded_conv2d_bwd.default,
                              (gy, x.detach(), w.detach(), [2, 1], [2, 1], mode, mask))


@pytest.mark.parametrize("backend,device", COMPILED)
def test_torch_compile_fullgraph(backend, device):
    torch._dynamo.reset()
    x = make_input((1, 3, 10, 9), device=device, requires_grad=True)
    w, b = _params((1, 3, 10, 9), 3, device=device)
    w.requires_grad_(True)

    def f(x, w, b):
        return torch.relu(sf.functional.padded_conv2d(x, w, b, 1, 1, "reflect")) * 2

    with sf.backends.use(backend):
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        y = compiled(x, w, b)
        y_eager = f(x, w, b)
        gx, gw = torch.autograd.grad(y.sum(), (x, w))
        ex, ew = torch.autograd.grad(y_eager.sum(), (x, w))
    assert_close(y, y_eager, **tolerance(torch.float32))
    assert_close(gx, ex, **tolerance(torch.float32))
    assert_close(gw, ew, **tolerance(torch.float32, 10.0))


def test_cpu_kernel_is_chosen_automatically_only_where_it_runs_its_own_algorithm():
    # The C++ kernel's library path (border fix-up) measures 0.9-1.1x the eager pair's time
    # (README), so for such layers the automatic choice stays with the eager pair; where the
    # kernel runs its Winograd / direct algorithms it is chosen. Forcing "cpu" always runs it.
    if not sf.backends.available()["cpu"]:
        pytest.skip("C++ extension not built")
    x = make_input((1, 2, 5, 5))
    w, _ = _params((1, 2, 5, 5), 3, out_channels=16)  # neither direct (few outputs) nor Winograd
    assert sf.backends.select("padded_conv2d", x, w, None, (1, 1), (1, 1), 1)[0] == "reference"
    with sf.backends.use("cpu"):
        assert sf.backends.select("padded_conv2d", x, w, None, (1, 1), (1, 1), 1)[0] == "cpu"
    wide = make_input((1, 32, 8, 8), layout="channels_last")
    w, _ = _params((1, 32, 8, 8), 3, out_channels=32)
    assert sf.backends.select("padded_conv2d", wide, w, None, (1, 1), (1, 1), 1)[0] == "cpu"


# ---------------------------------------------------------------------------------------------
# Errors


def _bad(match, *args, **kwargs):
    with pytest.raises((ValueError, TypeError), match=match):
        sf.functional.padded_conv2d(*args, **kwargs)


def test_errors_name_the_argument():
    x = make_input((1, 3, 6, 6))
    w, b = _params((1, 3, 6, 6), 3)
    _bad("input must have 4 dimensions", x[0], w, b)
    _bad("input must be a floating-point", x.long(), w, b)
    _bad("weight must have 4 dimensions", x, w[0], b)
    _bad("expects 3 input channels but input has 2", x[:, :2], w, b)
    _bad("weight dtype torch.float64 must equal", x, w.double(), b)
    _bad("bias must have shape", x, w, b[:2])
    _bad("bias dtype", x, w, b.half())
    _bad("weight is on meta but input is on cpu", x, w.to("meta"), b)
    _bad("padding must be >= 0", x, w, b, padding=-1)
    _bad("padding must be an int or a pair", x, w, b, padding="same")
    _bad("stride must be >= 1", x, w, b, stride=0)
    _bad("stride must be an int or a pair", x, w, b, stride=(1, 1, 1))
    _bad("padding_mode must be one of", x, w, b, padding_mode="circular")
    _bad(r"reflect padding must be smaller than the input size.*\(6, 1\).*height 6", x, w, b,
         padding=(6, 1))
    _bad("smaller than the kernel", x[..., :2, :2], w, b, padding=0, padding_mode="zeros")


@pytest.mark.skipif(not sf.backends.available()["cpu"], reason="C++ extension not built")
def test_compiled_op_errors():
    op = torch.ops.stylize_fast.padded_conv2d_fwd
    x = make_input((1, 3, 6, 6))
    w, b = _params((1, 3, 6, 6), 3)
    with pytest.raises(RuntimeError, match="reflect padding must be smaller"):
        op(x, w, b, [1, 1], [6, 0], 1)
    with pytest.raises(RuntimeError, match="padding_mode must be 0"):
        op(x, w, b, [1, 1], [1, 1], 7)
    with pytest.raises(RuntimeError, match="stride must be two integers >= 1"):
        op(x, w, b, [0, 1], [1, 1], 1)
    with pytest.raises(RuntimeError, match="weight has 3 input channels"):
        op(x[:, :2], w, b, [1, 1], [1, 1], 1)
    with pytest.raises(RuntimeError, match="grad_output must have shape"):
        torch.ops.stylize_fast.padded_conv2d_bwd(x, x, w, [1, 1], [1, 1], 1, [True] * 3)


def test_empty_batch():
    x = torch.empty(0, 3, 6, 6)
    w, b = _params((1, 3, 6, 6), 3)
    assert sf.functional.padded_conv2d(x, w, b, 1, 1).shape == (0, 4, 6, 6)


# ---------------------------------------------------------------------------------------------
# Layer


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_layer_matches_nn_conv2d(mode, layout):
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 6, 3, stride=2, padding=(1, 2), padding_mode=mode)
    ours = sf.PaddedConv2d(3, 6, 3, stride=2, padding=(1, 2), padding_mode=mode)
    assert list(ours.state_dict()) == list(conv.state_dict())
    ours.load_state_dict(conv.state_dict())
    x = make_input((2, 3, 9, 8), layout=layout, requires_grad=True)
    y, y_ref = ours(x), conv(x)
    assert_close(y, y_ref, **tolerance(torch.float32))
    g = torch.autograd.grad(y.sum(), (x, ours.weight, ours.bias))
    g_ref = torch.autograd.grad(y_ref.sum(), (x, conv.weight, conv.bias))
    for a, e in zip(g, g_ref):
        assert_close(a, e, **tolerance(torch.float32, 10.0))


def test_layer_defaults_unbatched_and_repr():
    layer = sf.PaddedConv2d(2, 4, 3, padding=1)
    assert layer.padding_mode == "reflect" and layer.stride == (1, 1)
    assert "padding_mode=reflect" in repr(layer) and repr(layer).startswith("PaddedConv2d(")
    x = make_input((2, 7, 5))
    y = layer(x)
    assert y.shape == (4, 7, 5)
    assert_close(y, F.conv2d(F.pad(x[None], (1, 1, 1, 1), "reflect"), layer.weight,
                             layer.bias)[0], **tolerance(torch.float32))
    no_bias = sf.PaddedConv2d(2, 4, 1, bias=False, dtype=torch.float64)
    assert no_bias.bias is None and no_bias.weight.dtype == torch.float64


def test_layer_from_conv_shares_parameters():
    conv = nn.Conv2d(3, 5, 3, stride=2)
    fused = sf.PaddedConv2d.from_conv(conv, "replicate", extra_padding=(1, 1))
    assert fused.weight is conv.weight and fused.bias is conv.bias
    x = make_input((1, 3, 8, 8))
    assert_close(fused(x), conv(F.pad(x, (1, 1, 1, 1), "replicate")), **tolerance(torch.float32))
    with pytest.raises(ValueError, match="groups=1"):
        sf.PaddedConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))


def test_layer_errors():
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        sf.PaddedConv2d(2, 2, 3, padding_mode="circular")
    with pytest.raises(ValueError, match="string padding is not supported"):
        sf.PaddedConv2d(2, 2, 3, padding="same")


def test_autocast_casts_like_conv2d():
    x = make_input((1, 3, 9, 8))
    w = torch.randn(4, 3, 3, 3)
    b = torch.randn(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sf.functional.padded_conv2d(x, w, b, 1, 1, "reflect")
        expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w, b)
    assert y.dtype == expected.dtype == torch.bfloat16
    # Both cast the same inputs to bfloat16: float64 on those casts is the ground truth.
    want = _reference(x.bfloat16(), w.bfloat16(), b.bfloat16(), 1, 1, "reflect")
    assert_half_close(y, want, terms=3 * 3 * 3, baseline=expected)
