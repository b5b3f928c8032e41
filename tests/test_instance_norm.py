"""sf.functional.instance_norm on every backend runnable here, against the float64 reference.

Backend-specific tests (schedules, opcheck of each op) live in test_instance_norm_cpu.py and
test_instance_norm_triton.py; the layer in test_fused_instance_norm_layer.py.
"""

from __future__ import annotations

import pytest
import torch

import stylize_fast as sf
from stylize_fast.ops import instance_norm_reference as reference
from stylize_fast.ops.common import activation_code
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    assert_matches,
    make_input,
    poisoned_outputs,
    pytorch_instance_norm_grads,
    tolerance,
)

from .conftest import LARGE, backend_devices, interpreted

BACKENDS = backend_devices("instance_norm")
# Value checks run the kernels: the reference backend against the float64 reference would be
# the same computation twice (test_references.py checks the reference itself).
KERNELS = [p for p in BACKENDS if p.values[0] != "reference"] or BACKENDS

SHAPES = [
    pytest.param((2, 3, 5, 7), id="odd"),
    pytest.param((2, 3, 1, 1), id="hw1"),
    pytest.param((1, 1, 9, 11), id="nc1"),
    pytest.param((2, 5, 17, 19), id="vector-tail"),
    pytest.param((1, 35, 6, 6), id="c35"),
    pytest.param((3, 16, 32, 32), id="c16"),
]
BIG_SHAPES = [
    pytest.param((1, 1, 1024, 1024), id="plane-1024"),
    pytest.param((1, 32, 257, 255), id="odd-large"),
]
if LARGE:
    BIG_SHAPES += [pytest.param((1, 32, 2048, 2048), id="plane-2048"),
                   pytest.param((8, 128, 256, 256), id="batch8")]
LAYOUTS = ["contiguous", "channels_last", "strided"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
AFFINE = ["none", "channel", "sample", "weight-only", "bias-only"]


def _affine(kind: str, n: int, c: int, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    shape = (n, c) if kind == "sample" else (c,)
    w = (torch.rand(shape, generator=g, dtype=torch.float64) + 0.5).to(device, dtype)
    b = torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)
    if kind == "none":
        return None, None
    if kind == "weight-only":
        return w, None
    if kind == "bias-only":
        return None, b
    return w, b


def _double(t):
    return None if t is None else t.detach().double()


def _reference(x, w, b, eps, activation, slope):
    return reference.instance_norm_forward(
        _double(x), _double(w), _double(b), eps, activation_code(activation), slope)[0]


def _run(backend, fn, *args, **kwargs):
    with sf.backends.use(backend):
        return fn(*args, **kwargs)


def _check_layout(y: torch.Tensor, x: torch.Tensor) -> None:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last), "output lost channels_last"
    else:
        assert y.is_contiguous(), f"output strides {y.stride()} for input {x.stride()}"


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_matches_reference(backend, device, shape, layout, dtype):
    x = make_input(shape, dtype, layout, device=device)
    w, b = _affine("channel", shape[0], shape[1], device)
    with poisoned_outputs():
        y = _run(backend, sf.functional.instance_norm, x, w, b, activation="relu")
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_all_written(y)
    _check_layout(y, x)
    # PyTorch's own op in x's dtype (relu after it: exact) is the half-precision baseline.
    baseline = None
    if dtype in (torch.bfloat16, torch.float16):
        baseline = torch.relu(pytorch_instance_norm_grads(x, w, b, 1e-5, torch.ones_like(x))[0])
    assert_matches(y, _reference(x, w, b, 1e-5, "relu", 0.01), terms=shape[2] * shape[3],
                   baseline=baseline)


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_forward_affine_and_activation(backend, device, affine, activation, layout):
    shape = (3, 4, 6, 5)
    x = make_input(shape, torch.float32, layout, device=device)
    w, b = _affine(affine, 3, 4, device)
    y = _run(backend, sf.functional.instance_norm, x, w, b, eps=1e-3, activation=activation,
             negative_slope=0.2)
    assert_close(y, _reference(x, w, b, 1e-3, activation, 0.2), **tolerance(torch.float32))


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("shape", BIG_SHAPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_forward_large(backend, device, shape, layout):
    if interpreted(backend, device):
        pytest.skip("large shapes are too slow for the Triton CPU interpreter")
    x = make_input(shape, torch.float32, layout, device=device, mean=3.0, std=0.5)
    w, b = _affine("channel", shape[0], shape[1], device)
    y = _run(backend, sf.functional.instance_norm, x, w, b, activation="leaky_relu")
    assert_close(y, _reference(x, w, b, 1e-5, "leaky_relu", 0.01), **tolerance(torch.float32))


def _activation_grad_mask(y: torch.Tensor, activation, slope: float) -> torch.Tensor:
    # d act / d pre-activation, taken from the TESTED forward output: a pre-activation within
    # rounding of zero may fall on different sides of the kink in float32 and float64.
    y = y.detach().double()
    if activation == "relu":
        return (y > 0).double()
    if activation == "leaky_relu":
        return torch.where(y < 0, torch.full_like(y, slope), torch.ones_like(y))
    return torch.ones_like(y)


BACKWARD_SHAPES = [
    pytest.param((2, 3, 5, 7), id="odd"),
    pytest.param((1, 1, 9, 11), id="nc1"),
    pytest.param((2, 5, 17, 19), id="vector-tail"),
    pytest.param((2, 16, 24, 24), id="c16"),
]


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("shape", BACKWARD_SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("affine,activation", [("channel", "relu"), ("sample", "leaky_relu"),
                                               ("none", None), ("bias-only", "relu")])
def test_backward_matches_reference(backend, device, shape, layout, dtype, affine, activation):
    slope = 0.1
    x = make_input(shape, dtype, layout, device=device, requires_grad=True)
    w, b = _affine(affine, shape[0], shape[1], device)
    params = [t.requires_grad_() for t in (w, b) if t is not None]
    grad_out = torch.randn(shape, dtype=torch.float64).to(device, dtype)
    with poisoned_outputs():
        y = _run(backend, sf.functional.instance_norm, x, w, b, activation=activation,
                 negative_slope=slope)
        grads = torch.autograd.grad(y, [x, *params], grad_out)
    for g, t in zip(grads, [x, *params]):
        assert g.dtype == t.dtype and g.shape == t.shape
        assert_all_written(g, "gradient")

    # Reference: float64 without activation, upstream gradient masked by the tested output.
    x64 = x.detach().double().requires_grad_()
    p64 = [t.detach().double().requires_grad_() for t in params]
    it = iter(p64)
    w64 = next(it) if w is not None else None
    b64 = next(it) if b is not None else None
    pre = reference.instance_norm_forward(x64, w64, b64, 1e-5, 0, 0.0)[0]
    upstream = grad_out.double() * _activation_grad_mask(y, activation, slope)
    expected = torch.autograd.grad(pre, [x64, *p64], upstream)
    # PyTorch's own op in x's dtype is the half-precision baseline where the masked upstream
    # gradient is exact in that dtype (relu's 0 / 1 mask: always; leaky_relu's slope: rarely).
    baselines = [None] * 3
    masked = upstream.to(dtype)
    if dtype in (torch.bfloat16, torch.float16) and torch.equal(masked.double(), upstream):
        _, base = pytorch_instance_norm_grads(x, w, b, 1e-5, masked)
        baselines = [base[0], *[g for g in base[1:] if g is not None]]
    names = ["grad_input", "grad_weight", "grad_bias"]
    plane = x[0, 0].numel()
    for name, got, want, base in zip(names, grads, expected, baselines):
        # grad_input: a reduction over each plane; dγ/dβ (float32 parameters: float32
        # tolerances) sum over N·H·W terms: the tolerance grows with the reduction length.
        terms = plane if name == "grad_input" else plane * (x.shape[0] if w is None or
                                                            w.dim() == 1 else 1)
        assert_matches(got, want, terms=terms, baseline=base, name=name,
                       scale=4.0 * max(1.0, terms ** 0.5))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("affine,activation", [("channel", "relu"), ("sample", "leaky_relu"),
                                               ("none", None), ("weight-only", "relu")])
def test_gradcheck_float64(backend, device, affine, activation):
    x = make_input((2, 3, 4, 5), torch.float64, device=device, requires_grad=True)
    w, b = _affine(affine, 2, 3, device, torch.float64)
    params = [t.requires_grad_() for t in (w, b) if t is not None]

    def fn(x, *params):
        it = iter(params)
        wt = next(it) if w is not None else None
        bt = next(it) if b is not None else None
        with sf.backends.use(backend):
            return sf.functional.instance_norm(x, wt, bt, activation=activation,
                                               negative_slope=0.3)

    # Interpreted Triton is slow: fast mode (one random direction); test_instance_norm_triton.py
    # runs the full check per schedule.
    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5, rtol=1e-4,
                                    fast_mode=interpreted(backend, device))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_deterministic(backend, device, layout):
    shape = (2, 8, 33, 31)
    x = make_input(shape, torch.float32, layout, device=device, requires_grad=True)
    w = torch.rand(8, device=device, requires_grad=True)
    b = torch.randn(8, device=device, requires_grad=True)
    grad_out = torch.randn(shape, device=device)
    results = []
    for _ in range(2):
        y = _run(backend, sf.functional.instance_norm, x, w, b, activation="relu")
        results.append((y, *torch.autograd.grad(y, (x, w, b), grad_out)))
    for first, second in zip(*results):
        assert torch.equal(first, second), "two identical runs gave different bits"


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_torch_compile_fullgraph(backend, device):
    # Under the Triton interpreter the Triton ops are opaque custom ops (interpreted kernels
    # cannot be traced), so this checks registration and fake tensors, not kernel capture.
    x = make_input((2, 4, 8, 8), torch.float32, device=device, requires_grad=True)
    w = torch.rand(4, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)

    def fn(x, w, b):
        return sf.functional.instance_norm(x, w, b, activation="relu") * 2

    with sf.backends.use(backend):
        torch._dynamo.reset()
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        y = compiled(x, w, b)
        y.sum().backward()
    expected = fn(x.detach(), w.detach(), b.detach())
    assert_close(y, expected, **tolerance(torch.float32))
    assert x.grad is not None and w.grad is not None and b.grad is not None


def test_automatic_choice_uses_the_extension_on_cpu():
    impls = sf.backends.implementations("instance_norm")
    name, _ = sf.backends.select("instance_norm", torch.randn(1, 2, 3, 3), None, None)
    assert name == ("cpu" if "cpu" in impls and sf.backends.available()["cpu"] else "reference")


def test_empty_batch():
    x = torch.randn(0, 3, 4, 4)
    assert sf.functional.instance_norm(x, activation="relu").shape == (0, 3, 4, 4)


# ---- bad input: a clear exception naming the argument -------------------------------------

@pytest.mark.parametrize("kwargs,error,match", [
    (dict(input=torch.randn(3, 4, 4)), ValueError, r"input must have 4 dimensions"),
    (dict(input=torch.randn(2, 3, 4, 4, 1)), ValueError, r"input must have 4 dimensions"),
    (dict(input=torch.ones(2, 3, 4, 4, dtype=torch.int64)), TypeError, r"input must be a float"),
    (dict(weight=torch.ones(4)), ValueError, r"weight must have shape \(C,\)"),
    (dict(bias=torch.ones(2, 2)), ValueError, r"bias must have shape"),
    (dict(weight=torch.ones(3, dtype=torch.int32)), TypeError, r"weight must be a floating"),
    (dict(weight=torch.ones(3, device="meta")), ValueError, r"weight is on meta"),
    (dict(eps=-1e-5), ValueError, r"eps must be a non-negative"),
    (dict(eps=float("nan")), ValueError, r"eps must be a non-negative"),
    (dict(activation="gelu"), ValueError, r"activation must be None, 'relu' or 'leaky_relu'"),
    (dict(input=[[1.0]]), TypeError, r"input must be a torch.Tensor"),
])
def test_bad_input_errors(kwargs, error, match):
    args = dict(input=torch.randn(2, 3, 4, 4), weight=None, bias=None, eps=1e-5, activation=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sf.functional.instance_norm(**args)
