"""padded_conv2d(..., activation="relu"): the ReLU epilogue of the padded convolution, forward and
backward, on every backend runnable here, against the float64 reference (F.pad + F.conv2d, then
relu). Inputs are centred on zero so that about half the outputs are negative and the mask
matters. CPU: every algorithm forced (direct with both register blockings, Winograd, library),
every instruction-set level; bfloat16 / float16 by the half-precision rule; gradcheck; opcheck;
poisoned outputs; argument errors; the PaddedConv2d layer; torch.compile. The CUDA kernels' epilogue
is checked by the CUDA emulation (tests/cuda_emulation/run_padded_conv.py), the Triton kernels'
here on small shapes under TRITON_INTERPRET=1.
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
from stylize_fast.ops.padded_conv import cpu_algorithm
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    assert_half_close,
    make_input,
    poisoned_outputs,
    tolerance,
)

from .conftest import backend_devices, interpreted
from .conv_helpers import centred_input as _input
from .conv_helpers import conv_params as _params
from .conv_helpers import leaves64 as _leaves64

BACKENDS = backend_devices("padded_conv2d")
KERNELS = [p for p in BACKENDS if p.values[0] != "reference"] or BACKENDS
COMPILED = [p for p in BACKENDS if p.values[0] in ("cpu", "cuda")]
HAS_CPU_KERNEL = any(p.values[0] == "cpu" for p in BACKENDS)
MODES = ["reflect", "replicate", "zeros"]
LEVELS = ["default", "avx2", "avx512", "avx512_bf16"]

# Layers each forced CPU algorithm runs, (C, O, k, stride): direct with output columns in lanes
# (few outputs), direct with output channels in lanes (32 channels_last outputs from 3 inputs),
# direct at stride 2, Winograd (3x3 stride 1), and the library with its relu post-pass.
ALGO_CASES = [
    ("direct", (4, 3, 5, 1)),
    ("direct", (3, 32, 5, 1)),
    ("direct", (3, 5, 3, 2)),
    ("winograd", (17, 19, 3, 1)),
    ("library", (5, 7, 3, 1)),
    ("library", (5, 7, 3, 2)),
]


def _reference(x, w, b, stride, padding, mode, activation="relu"):
    """float64 conv (+ relu) of float64 leaves, differentiable."""
    code = 1 if activation == "relu" else 0
    return reference.padded_conv2d_forward(x, w, b, (stride, stride), (padding, padding),
                                           padding_mode_code(mode), code)


def _run(backend, *args, **kwargs):
    with sf.backends.use(backend):
        return sf.functional.padded_conv2d(*args, **kwargs)


def _check_mask_matters(y64):
    """The reference output has many zeros and many positives: a kernel without the relu, or
    with the mask inverted, fails the value comparison by the size of the outputs."""
    zeros = (y64 == 0).double().mean().item()
    assert 0.2 < zeros < 0.8, f"{zeros:.0%} of the reference outputs are clamped"


def _forward_backward(backend, x, w, b, stride, padding, mode, gy_seed=5):
    """Our forward (poisoned outputs) and input / weight / bias gradients, and the float64
    reference's."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    with poisoned_outputs():
        y = _run(backend, *leaves, stride, padding, mode, activation="relu")
        gy = _input(y.shape, x.dtype, seed=gy_seed).to(x.device)
        got = torch.autograd.grad(y, leaves, gy)
    assert_all_written(y)
    for name, g in zip(("grad_input", "grad_weight", "grad_bias"), got):
        assert_all_written(g, name)
    ref_leaves = _leaves64(x, w, b)
    y64 = _reference(*ref_leaves, stride, padding, mode)
    want = torch.autograd.grad(y64, ref_leaves, gy.double())
    return y, got, y64, want, gy


# ---------------------------------------------------------------------------------------------
# Every backend


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_forward_backward_every_backend(backend, device, mode, stride, layout):
    shape, (c, o, k) = ((1, 3, 7, 6), (3, 5, 3)) if interpreted(backend, device) else \
        ((2, 5, 11, 9), (5, 6, 3))
    x = _input(shape, layout=layout, device=device)
    w, b = _params(c, o, k, torch.float32, device)
    y, got, y64, want, _ = _forward_backward(backend, x, w, b, stride, 1, mode)
    _check_mask_matters(y64)
    assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last"
                           else torch.contiguous_format)
    assert_close(y, y64, name="output", **tolerance(torch.float32, 4.0))
    assert (y[y64 == 0] == 0).all(), "outputs the relu clamps must be exactly zero"
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        assert_close(a, e, name=name, **tolerance(torch.float32, 10.0))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stride,k,padding", [(1, 3, 1), (2, 3, 2), (1, 1, 1)])
def test_gradcheck(backend, device, mode, stride, k, padding):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 5, 6, generator=g, dtype=torch.float64).to(device).requires_grad_()
    w = torch.randn(3, 2, k, k, generator=g, dtype=torch.float64).to(device).requires_grad_()
    b = (torch.randn(3, generator=g, dtype=torch.float64) * 0.3).to(device).requires_grad_()
    pre = _reference(x, w, b, stride, padding, mode, activation=None)
    # Finite differences across relu's kink would be meaningless: no pre-activation near 0.
    assert pre.abs().min() > 1e-4 and (pre < 0).any() and (pre > 0).any()
    with sf.backends.use(backend):
        assert torch.autograd.gradcheck(
            lambda x, w, b: sf.functional.padded_conv2d(x, w, b, stride, padding, mode,
                                                        activation="relu"),
            (x, w, b), eps=1e-6, atol=1e-8, fast_mode=interpreted(backend, device))


@pytest.mark.parametrize("backend,device", KERNELS)
def test_wrong_gradients_would_fail(backend, device):
    """The comparison of test_forward_backward_every_backend has teeth: the unmasked gradient,
    and the correct one 5% off, both fail it."""
    shape = (1, 3, 7, 6) if interpreted(backend, device) else (2, 5, 11, 9)
    x = _input(shape, device=device)
    w, b = _params(shape[1], 4, 3, torch.float32, device)
    _, got, _, want, gy = _forward_backward(backend, x, w, b, 1, 1, "reflect")
    assert_close(got[0], want[0], **tolerance(torch.float32, 10.0))
    leaves = _leaves64(x, w, b)
    unmasked = torch.autograd.grad(_reference(*leaves, 1, 1, "reflect", activation=None), leaves,
                                   gy.double())
    for wrong in (unmasked[0], want[0] * 1.05):
        with pytest.raises(AssertionError):
            assert_close(got[0], wrong, **tolerance(torch.float32, 10.0))
    with pytest.raises(AssertionError):
        assert_close(got[1], want[1] * 1.05, **tolerance(torch.float32, 10.0))


# ---------------------------------------------------------------------------------------------
# CPU: every algorithm, every instruction-set level, half precision


def _runs(algorithm, x, w, stride, padding) -> bool:
    """Whether the forced ``algorithm`` runs this layer (a forced one that cannot raises)."""
    try:
        return cpu_algorithm(x, w, (stride, stride), (padding, padding), 1) == algorithm
    except RuntimeError:
        return False


def _case_id(case):
    algo, (c, o, k, s) = case
    return f"{algo}-{c}to{o}k{k}s{s}"


@pytest.mark.skipif(not HAS_CPU_KERNEL, reason="no CPU kernel")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("algorithm,layer", ALGO_CASES, ids=[_case_id(c) for c in ALGO_CASES])
def test_every_cpu_algorithm(monkeypatch, mode, layout, algorithm, layer):
    monkeypatch.setitem(sf.config.options, "conv_algo", algorithm)
    c, o, k, stride = layer
    if algorithm == "direct" and o == 32 and layout != "channels_last":
        pytest.skip("the channels-in-lanes blocking needs channels_last output")
    x = _input((2, c, 13, 11), layout=layout)
    w, b = _params(c, o, k, torch.float32)
    padding = k // 2
    assert cpu_algorithm(x, w, (stride, stride), (padding, padding),
                         padding_mode_code(mode)) == algorithm
    y, got, y64, want, _ = _forward_backward("cpu", x, w, b, stride, padding, mode)
    _check_mask_matters(y64)
    scale = 40.0 if algorithm == "winograd" else 4.0  # F(4x4, 3x3) loses a few bits
    assert_close(y, y64, name=f"{algorithm} output", **tolerance(torch.float32, scale))
    assert (y[y64 == 0] == 0).all()
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        assert_close(a, e, name=f"{algorithm} {name}", **tolerance(torch.float32, 4 * scale))


@pytest.mark.skipif(not HAS_CPU_KERNEL, reason="no CPU kernel")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"], ids=["rows", "lanes"])
def test_direct_streamed_stores(monkeypatch, layout):
    """Outputs of 4 MiB and more leave the direct kernel through non-temporal stores (row tiles,
    and the channels-in-lanes blocking): the relu is applied on that path too."""
    monkeypatch.setitem(sf.config.options, "conv_algo", "direct")
    x = _input((1, 3, 130, 130), layout=layout)
    w, b = _params(3, 64, 5, torch.float32)
    with poisoned_outputs():
        y = _run("cpu", x, w, b, 1, 2, activation="relu")
    assert y.numel() * y.element_size() >= 4 << 20
    assert_all_written(y)
    y64 = _reference(*_leaves64(x, w, b), 1, 2, "reflect")
    _check_mask_matters(y64)
    assert_close(y, y64, **tolerance(torch.float32, 4.0))


def _supported_levels(monkeypatch):
    monkeypatch.setitem(sf.config.options, "cpu_isa", None)
    best = torch.ops.stylize_fast.instance_norm_cpu_isa()
    return LEVELS[: LEVELS.index(best) + 1] if best in LEVELS else [best]


@pytest.mark.skipif(not HAS_CPU_KERNEL, reason="no CPU kernel")
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_each_instruction_set(monkeypatch, level, dtype):
    if level not in _supported_levels(monkeypatch):
        pytest.skip(f"this CPU does not run {level}")
    monkeypatch.setitem(sf.config.options, "cpu_isa", level)
    assert torch.ops.stylize_fast.instance_norm_cpu_isa() == level
    ran = set()
    for (algorithm, (c, o, k, stride)), layout in itertools.product(
            ALGO_CASES, ["contiguous", "channels_last"]):
        monkeypatch.setitem(sf.config.options, "conv_algo", algorithm)
        if dtype == torch.bfloat16 and (algorithm, o) == ("direct", 32):
            c = 1  # the direct kernel takes many bfloat16 outputs from one input channel only
        x = _input((1, c, 9, 21), dtype, layout)
        w, b = _params(c, o, k, dtype)
        pad = k // 2
        if not _runs(algorithm, x, w, stride, pad):
            continue
        ran.add((algorithm, o, layout))
        with poisoned_outputs():
            y = torch.ops.stylize_fast.padded_conv2d_fwd(x, w, b, [stride] * 2, [pad] * 2, 1, 1)
        assert_all_written(y)
        y64 = _reference(*_leaves64(x, w, b), stride, pad, "reflect")
        where = f"{level} {algorithm} {layout} {c}->{o} k{k} s{stride}"
        if dtype == torch.float32:
            assert_close(y, y64, name=where, **tolerance(dtype, 40.0))
        else:
            assert_half_close(y, y64, terms=c * k * k, name=where)
        assert (y[y64 == 0] == 0).all(), where
    # Every algorithm ran, and the direct kernel's channels-in-lanes blocking.
    assert {a for a, _, _ in ran} == {"direct", "winograd", "library"}
    assert ("direct", 32, "channels_last") in ran


@pytest.mark.skipif(not HAS_CPU_KERNEL, reason="no CPU kernel")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("algorithm,layer", ALGO_CASES, ids=[_case_id(c) for c in ALGO_CASES])
def test_half_precision(monkeypatch, dtype, layout, algorithm, layer):
    monkeypatch.setitem(sf.config.options, "conv_algo", algorithm)
    c, o, k, stride = layer
    if dtype == torch.bfloat16 and (algorithm, o) == ("direct", 32):
        c = 1  # the direct kernel takes many bfloat16 outputs from one input channel only
    x = _input((2, c, 13, 11), dtype, layout)
    w, b = _params(c, o, k, dtype)
    pad = k // 2
    if not _runs(algorithm, x, w, stride, pad):
        pytest.skip(f"{algorithm} does not run this layer in {dtype} {layout}")
    y, got, y64, want, gy = _forward_backward("cpu", x, w, b, stride, pad, "reflect")
    # PyTorch's own conv + relu in the same dtype: the baseline of the half-precision rule.
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    torch_y = torch.relu(F.conv2d(F.pad(leaves[0], (pad,) * 4, mode="reflect"), leaves[1],
                                  leaves[2], stride))
    torch_grads = torch.autograd.grad(torch_y, leaves, gy)
    assert_half_close(y, y64, terms=c * k * k, baseline=torch_y, name=f"{algorithm} output")
    rows = y[:, 0].numel()
    for name, a, e, base, terms in zip(("grad_input", "grad_weight", "grad_bias"), got, want,
                                       torch_grads, (o * k * k, rows, rows)):
        assert a.dtype == dtype
        assert_half_close(a, e, terms=terms, baseline=base, name=f"{algorithm} {name}")


# ---------------------------------------------------------------------------------------------
# Op registration, torch.compile


@pytest.mark.parametrize("backend,device", COMPILED)
@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(backend, device, mode, layout):
    op = torch.ops.stylize_fast
    for bias, grad in itertools.product((True, False), (True, False)):
        x = _input((2, 3, 7, 6), torch.float64, layout, device=device).requires_grad_(grad)
        w, b = _params(3, 4, 3, device=device, bias=bias)
        w.requires_grad_(grad)
        torch.library.opcheck(op.padded_conv2d_fwd.default, (x, w, b, [2, 1], [2, 1], mode, 1))
    y = op.padded_conv2d_fwd(x.detach(), w.detach(), None, [2, 1], [2, 1], mode, 1)
    gy = _input(y.shape, torch.float64, layout, device=device)
    for mask in ([True, True, True], [True, False, False], [False, True, False]):
        torch.library.opcheck(op.padded_conv2d_bwd.default,
                              (gy, x.detach(), w.detach(), [2, 1], [2, 1], mode, mask, y, 1))


@pytest.mark.parametrize("backend,device", KERNELS)
def test_output_saved_only_with_an_activation(backend, device):
    """The forward saves its output for relu's mask, and only then: the plain op's autograd
    graph keeps input and weight alone."""
    x = _input((1, 3, 8, 7), device=device).requires_grad_()
    w, b = _params(3, 4, 3, torch.float32, device)
    w.requires_grad_()

    def saved_shapes(activation):
        shapes = []

        def pack(t):
            shapes.append(tuple(t.shape))
            return t

        with sf.backends.use(backend), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = sf.functional.padded_conv2d(x, w, b, 1, 1, activation=activation)
        return shapes, tuple(y.shape)

    plain, out_shape = saved_shapes(None)
    relu, _ = saved_shapes("relu")
    assert sorted(plain) == sorted([tuple(x.shape), tuple(w.shape)])
    assert sorted(relu) == sorted([tuple(x.shape), tuple(w.shape), out_shape])


@pytest.mark.parametrize("backend,device", COMPILED)
def test_torch_compile_fullgraph(backend, device):
    torch._dynamo.reset()
    x = _input((1, 3, 10, 9), device=device).requires_grad_()
    w, b = _params(3, 4, 3, torch.float32, device)
    w.requires_grad_(True)

    def f(x, w, b):
        return sf.functional.padded_conv2d(x, w, b, 1, 1, "reflect", activation="relu") * 2

    with sf.backends.use(backend):
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        y = compiled(x, w, b)
        y_eager = f(x, w, b)
        gx, gw = torch.autograd.grad(y.sum(), (x, w))
        ex, ew = torch.autograd.grad(y_eager.sum(), (x, w))
    assert_close(y, y_eager, **tolerance(torch.float32))
    assert_close(gx, ex, **tolerance(torch.float32))
    assert_close(gw, ew, **tolerance(torch.float32))


# ---------------------------------------------------------------------------------------------
# Errors, the layer


@pytest.mark.parametrize("bad", ["gelu", "leaky_relu", 1, True, nn.ReLU()], ids=repr)
def test_bad_activation_names_the_argument(bad):
    x = _input((1, 2, 5, 5))
    w, b = _params(2, 3, 3, torch.float32)
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        sf.functional.padded_conv2d(x, w, b, 1, 1, activation=bad)
    with pytest.raises(ValueError, match="activation"):
        sf.nn.PaddedConv2d(2, 3, 3, activation=bad)


def test_leaky_relu_error_says_it_is_not_implemented():
    x = _input((1, 2, 5, 5))
    w, _ = _params(2, 3, 3, torch.float32)
    with pytest.raises(ValueError, match="leaky_relu' is not implemented"):
        sf.functional.padded_conv2d(x, w, None, 1, 1, activation="leaky_relu")


@pytest.mark.parametrize("backend,device", COMPILED)
def test_compiled_op_errors(backend, device):
    op = torch.ops.stylize_fast
    x = _input((1, 2, 5, 5), device=device)
    w, _ = _params(2, 3, 3, torch.float32, device)
    with pytest.raises(RuntimeError, match=r"activation must be 0 \(none\) or 1 \(relu\), got 3"):
        op.padded_conv2d_fwd(x, w, None, [1, 1], [1, 1], 1, 3)
    with pytest.raises(RuntimeError, match="leaky_relu is not implemented"):
        op.padded_conv2d_fwd(x, w, None, [1, 1], [1, 1], 1, 2)
    y = op.padded_conv2d_fwd(x, w, None, [1, 1], [1, 1], 1, 1)
    with pytest.raises(RuntimeError, match="output"):
        op.padded_conv2d_bwd(y, x, w, [1, 1], [1, 1], 1, [True, True, False], None, 1)
    with pytest.raises(RuntimeError, match="output"):
        op.padded_conv2d_bwd(y, x, w, [1, 1], [1, 1], 1, [True, True, False], y[:, :2], 1)


def test_none_and_case_are_accepted():
    x = _input((1, 2, 6, 5))
    w, b = _params(2, 3, 3, torch.float32)
    plain = sf.functional.padded_conv2d(x, w, b, 1, 1)
    assert torch.equal(sf.functional.padded_conv2d(x, w, b, 1, 1, activation="none"), plain)
    assert torch.equal(sf.functional.padded_conv2d(x, w, b, 1, 1, activation="ReLU"),
                       torch.relu(plain))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_layer_matches_conv_then_relu(layout):
    torch.manual_seed(4)
    conv = nn.Conv2d(5, 6, 3, padding=1, padding_mode="reflect")
    layer = sf.nn.PaddedConv2d(5, 6, 3, padding=1, activation="relu")
    layer.load_state_dict(conv.state_dict())
    assert list(layer.state_dict()) == list(conv.state_dict())
    with torch.no_grad():
        conv.bias.mul_(0.1)
        layer.bias.copy_(conv.bias)
    x = _input((2, 5, 9, 8), layout=layout)
    want = torch.relu(conv(x))
    assert (want == 0).any()
    assert_close(layer(x), want, **tolerance(torch.float32, 4.0))
    assert_close(layer(x[0]), want[0], **tolerance(torch.float32, 4.0))  # unbatched
    assert "activation='relu'" in repr(layer)
    assert "activation" not in repr(sf.nn.PaddedConv2d(5, 6, 3))


def test_layer_activation_is_keyword_only():
    with pytest.raises(TypeError):
        sf.nn.PaddedConv2d(5, 6, 3, 1, 1, "reflect", True, None, None, "relu")


@pytest.mark.skipif(not HAS_CPU_KERNEL, reason="no CPU kernel")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(2, 64, 13, 11, 48), (1, 20, 9, 14, 24)], ids=str)
def test_input_gradient_only_masks_in_the_winograd_load(monkeypatch, dtype, shape):
    """A frozen conv + ReLU (the loss network's): with only the input gradient asked for,
    channels_last and zero padding, the CPU backward applies relu's mask as the Winograd input
    transform loads grad_output (no threshold_backward pass); the result equals the float64
    reference, and the masked-copy path (weight gradient asked for too) gives the same input
    gradient. grad_output is huge where the output was clamped, so an unmasked load shows."""
    monkeypatch.setitem(sf.config.options, "conv_algo", "winograd")
    n, c, h, w_, o = shape
    x = _input((n, c, h, w_), dtype, "channels_last")
    w, b = _params(c, o, 3, dtype)
    y = sf.functional.padded_conv2d(x, w, b, padding=1, padding_mode="zeros", activation="relu")
    assert cpu_algorithm(x, w, (1, 1), (1, 1), 0, input_grad=True) == "winograd"
    _check_mask_matters(y.double())
    gy = make_input(y.shape, dtype, "channels_last", generator=torch.Generator().manual_seed(11))
    gy = torch.where(y > 0, gy, torch.full_like(gy, 1e4))
    if n == 1:  # autograd may hand over a size-1 batch dimension with any stride
        gy = gy.as_strided(gy.shape, (gy.numel() + 7, *gy.stride()[1:]))
    ops = torch.ops.stylize_fast
    with torch.profiler.profile() as prof:
        gated, _, _ = ops.padded_conv2d_bwd(gy, x, w, [1, 1], [1, 1], 0, [True, False, False],
                                            y, 1)
    names = {e.name for e in prof.events()}
    assert "aten::threshold_backward" not in names
    copied, _, _ = ops.padded_conv2d_bwd(gy, x, w, [1, 1], [1, 1], 0, [True, True, False], y, 1)
    x64 = x.double().requires_grad_()
    conv64 = F.conv2d(x64, w.double(), b.double(), padding=1)
    (want,) = torch.autograd.grad(conv64, x64, gy.double() * (y > 0))
    assert gated.is_contiguous(memory_format=torch.channels_last)
    if dtype == torch.float32:
        assert_close(gated, want, name="gated input gradient", **tolerance(dtype, 40.0))
        assert_close(copied, want, name="masked-copy input gradient", **tolerance(dtype, 40.0))
    else:
        assert_half_close(gated, want, terms=o * 9, name="gated input gradient")
        assert_half_close(copied, want, terms=o * 9, name="masked-copy input gradient")
