"""Triton padded-convolution kernels (stylize_fast/ops/padded_conv_triton.py) against the float64
reference ``F.conv2d(F.pad(x, mode), w, b, stride)``: forward, input gradient, weight and bias
gradients for every padding mode x stride x kernel size, layouts, dtypes, pad == size - 1;
poisoned outputs, determinism, gradcheck, opcheck, argument errors.

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
which executes every Triton op of every program in Python: shapes are a few hundred elements.
"""

from __future__ import annotations

import pytest
import torch

import stylize_fast as sf
from stylize_fast import backends
from stylize_fast.ops import padded_conv_reference as reference
from stylize_fast.ops.common import PaddingMode
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    assert_half_close,
    float64_copy,
    make_input,
    poisoned_outputs,
    pytorch_padded_conv2d_grads,
    tolerance,
)

triton_ops = pytest.importorskip("stylize_fast.ops.padded_conv_triton")

if not backends.available()["triton"]:
    pytest.skip(f"triton backend unavailable: {backends.unavailable_reason('triton')}",
                allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FWD = torch.ops.stylize_fast.padded_conv2d_fwd_triton
BWD = torch.ops.stylize_fast.padded_conv2d_bwd_triton
MODES = [PaddingMode.ZEROS, PaddingMode.REFLECT, PaddingMode.REPLICATE]

# kernel size -> (input shape, padding). Odd sizes everywhere; H, W not multiples of a stride.
# 9x9 (Johnson's first/last layer) is the interpreter's slowest: one image, few channels, and a
# padding that still makes most pixels border pixels (reflected gradients from both sides).
CASES = {
    1: ((2, 3, 5, 7), (1, 0)),  # 1x1 with padding: output border is pure padding
    3: ((2, 3, 5, 7), (1, 1)),  # the generators' residual / downsampling convs
    9: ((1, 2, 5, 6), (4, 3)),  # pad 4 == H - 1: every row is a border row
}


def _run(x, w, b, stride, padding, mode, gy=None, mask=(True, True, True)):
    """Forward (and backward when ``gy`` is given) of the Triton ops, with poisoned outputs."""
    with poisoned_outputs():
        y = FWD(x, w, b, list(stride), list(padding), int(mode))
        grads = None
        if gy is not None:
            grads = BWD(gy, x, w, list(stride), list(padding), int(mode), list(mask))
    assert_all_written(y, "output")
    if grads is not None:
        for name, g, wanted in zip(("grad_input", "grad_weight", "grad_bias"), grads, mask):
            if wanted:
                assert_all_written(g, name)
            else:
                assert g.shape == (0,), f"{name} not requested but has shape {tuple(g.shape)}"
    return y, grads


def _reference(x, w, b, stride, padding, mode, gy):
    """float64 output and gradients, and for each a bound on its magnitude: the same sums taken
    over absolute values (rounding error of a sum grows with the sum of |terms|)."""
    x64, w64, b64 = (float64_copy(t).requires_grad_(True) if t is not None else None
                     for t in (x, w, b))
    y = reference.padded_conv2d_forward(x64, w64, b64, stride, padding, mode)
    grads = torch.autograd.grad(y, [t for t in (x64, w64, b64) if t is not None], gy.double())
    xa, wa = x64.detach().abs().requires_grad_(True), w64.detach().abs().requires_grad_(True)
    ya = reference.padded_conv2d_forward(xa, wa, None if b is None else b64.detach().abs(),
                                         stride, padding, mode)
    bounds = torch.autograd.grad(ya, (xa, wa), gy.double().abs())
    gb_bound = gy.double().abs().sum((0, 2, 3))
    return y.detach(), grads, (ya.detach().amax(), bounds[0].amax(), bounds[1].amax(),
                               gb_bound.amax())


def _check_all(x, w, b, stride, padding, mode, *, layout="contiguous"):
    dtype = x.dtype
    out_shape = reference.padded_conv2d_forward(x[:1, :, :, :].double(), w.double(), None,
                                                stride, padding, mode).shape
    gy = make_input((x.shape[0], *out_shape[1:]), dtype, layout)
    y, (gx, gw, gb) = _run(x, w, b, stride, padding, mode, gy)
    ry, rgrads, bounds = _reference(x, w, b, stride, padding, mode, gy)
    rgx, rgw = rgrads[:2]
    names = ("output", "grad_input", "grad_weight", "grad_bias")
    pairs = [(y, ry), (gx, rgx), (gw, rgw)] + ([(gb, rgrads[2])] if b is not None else [])
    half = dtype in (torch.float16, torch.bfloat16)
    if half:  # the half-precision rule: no worse than twice PyTorch's own op in that dtype
        torch_y, torch_grads = pytorch_padded_conv2d_grads(x, w, b, stride, padding,
                                                           mode.name.lower(), gy)
        baselines = [torch_y, *torch_grads]
        terms = (w[0].numel(), w.shape[0] * w.shape[2] * w.shape[3], ry[:, 0].numel(),
                 ry[:, 0].numel())
    for i, (name, (got, want), bound) in enumerate(zip(names, pairs, bounds)):
        assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {dtype}"
        if half:
            assert_half_close(got, want, terms=terms[i], baseline=baselines[i], name=name)
        else:
            # float32: the rounding error of a sum grows with the sum of |terms| (bound).
            assert_close(got, want, name=name, **tolerance(dtype, scale=max(1.0, float(bound))))
    # Outputs follow the input's layout (the rule of F.conv2d).
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt), f"output not in {fmt}"
    assert gx.is_contiguous(memory_format=fmt), f"grad_input not in {fmt}"


def _weights(c_out, c_in, k, dtype, bias=True):
    w = make_input((c_out, c_in, k, k), dtype, mean=0.1, std=0.5)
    b = make_input((c_out,), dtype) if bias else None
    return w, b


@pytest.mark.parametrize("k", [1, 3, 9])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name.lower())
def test_modes_strides_kernels(mode, stride, k):
    shape, padding = CASES[k]
    x = make_input(shape, torch.float32, device=DEVICE)
    w, b = _weights(3, shape[1], k, torch.float32)
    _check_all(x, w.to(DEVICE), b.to(DEVICE), (stride, stride), padding, mode)


# Layout x dtype on the generators' commonest layer (3x3 reflect); stride alternates so each
# layout also meets stride 2. float64 exercises the fp64 tl.dot path used by gradcheck.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64],
                         ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_layouts_dtypes(layout, dtype):
    stride = 2 if layout == "channels_last" else 1
    x = make_input((2, 5, 5, 6), dtype, layout, device=DEVICE)
    w, b = _weights(6, 5, 3, dtype)
    _check_all(x, w.to(DEVICE), b.to(DEVICE), (stride, stride), (1, 1), PaddingMode.REFLECT,
               layout=layout)


# Bigger than the interpreter's usual few hundred elements (~10-20 s each there): a batch of
# two, 9x9 kernels with more than one channel on each side.
@pytest.mark.slow
@pytest.mark.parametrize("dtype,stride,shape", [
    pytest.param(torch.bfloat16, 1, (2, 2, 6, 7), id="bf16-s1"),
    pytest.param(torch.float32, 2, (2, 4, 9, 10), id="fp32-s2-channels_last"),
])
def test_9x9_batch2(dtype, stride, shape):
    layout = "channels_last" if stride == 2 else "contiguous"
    x = make_input(shape, dtype, layout, device=DEVICE)
    w, b = _weights(3, shape[1], 9, dtype)
    _check_all(x, w.to(DEVICE), b.to(DEVICE), (stride, stride), (4, 4), PaddingMode.REFLECT,
               layout=layout)


@pytest.mark.parametrize("mode", [PaddingMode.REFLECT, PaddingMode.REPLICATE],
                         ids=lambda m: m.name.lower())
def test_pad_equals_size_minus_one(mode):
    # 3x3 image, padding 2 on both sides: each pixel is read through up to three coordinates per
    # dimension (itself and both mirrors), so the gathered border gradients overlap.
    x = make_input((1, 2, 3, 3), torch.float32, device=DEVICE)
    w, b = _weights(3, 2, 5, torch.float32)
    _check_all(x, w.to(DEVICE), b.to(DEVICE), (1, 1), (2, 2), mode)


def test_rectangular_padding_and_stride():
    # (sh, sw) = (2, 1), (ph, pw) = (2, 1), 3x5 kernel: nothing symmetric to hide a swapped index.
    x = make_input((1, 3, 6, 5), torch.float32, "channels_last", device=DEVICE)
    w = make_input((4, 3, 3, 5), torch.float32, mean=0.1, std=0.5).to(DEVICE)
    _check_all(x, w, None, (2, 1), (2, 1), PaddingMode.REFLECT, layout="channels_last")


def test_partial_output_mask():
    # Each gradient alone: the others come back as (0,) tensors (checked in _run).
    x = make_input((1, 3, 5, 5), torch.float32, device=DEVICE)
    w, b = _weights(4, 3, 3, torch.float32)
    w, b = w.to(DEVICE), b.to(DEVICE)
    gy = make_input((1, 4, 5, 5), torch.float32, device=DEVICE)
    _, want, bounds = _reference(x, w, b, (1, 1), (1, 1), PaddingMode.REFLECT, gy)
    names = ("grad_input", "grad_weight", "grad_bias")
    for i in range(3):
        mask = [j == i for j in range(3)]
        _, grads = _run(x, w, b, (1, 1), (1, 1), PaddingMode.REFLECT, gy, mask)
        assert_close(grads[i], want[i], name=names[i],
                     **tolerance(torch.float32, scale=float(bounds[i + 1])))


def test_backward_is_deterministic():
    x = make_input((2, 4, 5, 7), torch.float32, device=DEVICE)
    w, _ = _weights(5, 4, 3, torch.float32)
    gy = make_input((2, 5, 3, 4), torch.float32, device=DEVICE)
    args = ([2, 2], [1, 1], int(PaddingMode.REFLECT), [True, True, True])
    first = BWD(gy, x, w.to(DEVICE), *args)
    second = BWD(gy, x, w.to(DEVICE), *args)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_backend_registered_and_autograd():
    # Through the public function, forced onto the Triton backend: autograd uses the bwd op.
    impl = sf.backends.implementations("padded_conv2d").get("triton")
    if impl is None:
        pytest.skip("stylize_fast.ops.padded_conv (register_autograd) is not present")
    x = make_input((1, 3, 5, 6), torch.float32, device=DEVICE, requires_grad=True)
    w, b = _weights(4, 3, 3, torch.float32)
    w, b = w.to(DEVICE).requires_grad_(), b.to(DEVICE).requires_grad_()
    with sf.backends.use("triton"):
        y = sf.functional.padded_conv2d(x, w, b, stride=1, padding=1, padding_mode="replicate")
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), gy)
    ry, rgrads, bounds = _reference(x.detach(), w.detach(), b.detach(), (1, 1), (1, 1),
                                    PaddingMode.REPLICATE, gy)
    assert_close(y, ry, name="output", **tolerance(torch.float32, scale=float(bounds[0])))
    for name, g, r, bound in zip(("grad_input", "grad_weight", "grad_bias"), grads, rgrads,
                                 bounds[1:]):
        assert_close(g, r, name=name, **tolerance(torch.float32, scale=float(bound)))


def test_supports_rejects_what_kernels_cannot_run():
    x = torch.randn(1, 4, 5, 5)
    w = torch.randn(3, 2, 3, 3)  # groups = 2
    assert "groups" in triton_ops.supports(x, w, None, (1, 1), (1, 1), 1)
    assert "dtype" in triton_ops.supports(x.int(), w.int(), None, (1, 1), (1, 1), 1)
    assert triton_ops.supports(x, torch.randn(3, 4, 3, 3), None, (1, 1), (1, 1), 1) is None


def test_bad_arguments_raise_clear_errors():
    x = torch.randn(1, 2, 3, 3, device=DEVICE)
    w = torch.randn(3, 2, 3, 3, device=DEVICE)
    with pytest.raises(AssertionError, match="reflect padding"):
        FWD(x, w, None, [1, 1], [3, 1], int(PaddingMode.REFLECT))
    with pytest.raises(AssertionError, match="padding_mode"):
        FWD(x, w, None, [1, 1], [1, 1], 7)
    with pytest.raises(AssertionError, match=r"weight.shape\[1\]"):
        FWD(x, w[:, :1], None, [1, 1], [1, 1], 0)
    with pytest.raises(AssertionError, match="grad_output"):
        BWD(torch.randn(1, 3, 2, 2, device=DEVICE), x, w, [1, 1], [1, 1], 1, [True, True, True])


def test_gradcheck_float64():
    x = make_input((1, 2, 3, 4), torch.float64, device=DEVICE, requires_grad=True)
    w = make_input((2, 2, 3, 3), torch.float64, device=DEVICE, requires_grad=True)
    b = make_input((2,), torch.float64, device=DEVICE, requires_grad=True)

    def fn(x, w, b):
        return FWD(x, w, b, [2, 1], [2, 1], int(PaddingMode.REFLECT))

    if sf.backends.implementations("padded_conv2d").get("triton") is None:
        pytest.skip("autograd is registered by stylize_fast.ops.padded_conv, not present")
    # fast_mode: random projections, a handful of kernel runs instead of one per element.
    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)


def test_opcheck():
    if sf.backends.implementations("padded_conv2d").get("triton") is None:
        pytest.skip("autograd is registered by stylize_fast.ops.padded_conv, not present")
    x = make_input((1, 2, 4, 5), torch.float32, "channels_last", device=DEVICE,
                   requires_grad=True)
    w = make_input((3, 2, 3, 3), torch.float32, device=DEVICE, requires_grad=True)
    b = make_input((3,), torch.float32, device=DEVICE, requires_grad=True)
    torch.library.opcheck(FWD, (x, w, b, [1, 2], [1, 1], int(PaddingMode.REFLECT)))
    gy = make_input((1, 3, 4, 3), torch.float32, device=DEVICE)
    torch.library.opcheck(BWD, (gy, x.detach(), w.detach(), [1, 2], [1, 1],
                                int(PaddingMode.REFLECT), [True, False, True]))


def test_torch_compile_fullgraph():
    x = make_input((1, 2, 5, 6), torch.float32, "channels_last", device=DEVICE)
    w, b = _weights(3, 2, 3, torch.float32)
    w, b = w.to(DEVICE), b.to(DEVICE)

    def fn(x, w, b):
        return sf.functional.padded_conv2d(x, w, b, stride=2, padding=1,
                                           padding_mode="reflect") * 2.0

    # Under the interpreter the op is opaque to the compiler (a custom op with a fake), so the
    # graph is traced with aot_eager; on a GPU Inductor sees the Triton kernels.
    backend = "inductor" if DEVICE == "cuda" else "aot_eager"
    with sf.backends.use("triton"):
        torch._dynamo.reset()
        got = torch.compile(fn, fullgraph=True, backend=backend)(x, w, b)
    want = reference.padded_conv2d_forward(x.double(), w.double(), b.double(), (2, 2), (1, 1),
                                           PaddingMode.REFLECT) * 2.0
    assert_close(got, want, name="compiled output", **tolerance(torch.float32, scale=100.0))
