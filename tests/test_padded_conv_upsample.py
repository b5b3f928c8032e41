"""padded_conv2d(..., upsample=s): nearest upsampling folded into the padded convolution (the
PyTorch examples' / Johnson's UpsampleConvLayer and AdaIN's decoder in one op), forward and
backward on every backend runnable here, against the float64 reference (F.interpolate, F.pad,
F.conv2d). CPU: the Winograd kernel reads the small input through its index map (checked: no
upsample op runs and autograd saves no upsampled tensor), the other algorithms upsample first;
every algorithm forced, every instruction-set level, bfloat16 by the half-precision rule;
gradcheck; opcheck; poisoned outputs; argument errors; PaddedConv2d; the generators' fused
upsampling layers against the plain ones; torch.compile.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import stylize_fast as sf
from stylize_fast.models.layers import UpsampleConvLayer
from stylize_fast.ops import padded_conv_reference as reference
from stylize_fast.ops.common import padding_mode_code
from stylize_fast.ops.padded_conv import cpu_algorithm
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    assert_half_close,
    poisoned_outputs,
    tolerance,
)

from .conftest import backend_devices, interpreted
from .conv_helpers import centred_input as _input
from .conv_helpers import conv_params
from .conv_helpers import leaves64 as _leaves64

BACKENDS = backend_devices("padded_conv2d")
KERNELS = [p for p in BACKENDS if p.values[0] != "reference"] or BACKENDS
HAS_CPU_KERNEL = any(p.values[0] == "cpu" for p in BACKENDS)
MODES = ["reflect", "replicate", "zeros"]
LEVELS = ["default", "avx2", "avx512", "avx512_bf16"]
needs_cpu_kernel = pytest.mark.skipif(not HAS_CPU_KERNEL, reason="no CPU kernel")


def _params(c, o, k, dtype=torch.float32, device="cpu", bias=True, seed=1):
    return conv_params(c, o, k, dtype, device, bias, seed)


def _reference(x, w, b, padding, mode, up, activation=None, stride=1):
    """float64 F.interpolate (nearest) then the padded conv (+ relu), differentiable."""
    xu = F.interpolate(x, scale_factor=float(up), mode="nearest")
    return reference.padded_conv2d_forward(xu, w, b, (stride, stride), (padding, padding),
                                           padding_mode_code(mode),
                                           1 if activation == "relu" else 0)


def _run(backend, *args, **kwargs):
    with sf.backends.use(backend):
        return sf.functional.padded_conv2d(*args, **kwargs)


def _forward_backward(backend, x, w, b, padding, mode, up, activation=None, stride=1):
    """Ours (outputs poisoned) and the float64 reference's output and gradients."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (x, w, b)]
    wanted = [t for t in leaves if t is not None]
    with poisoned_outputs():
        y = _run(backend, *leaves, stride, padding, mode, activation=activation, upsample=up)
        gy = _input(y.shape, x.dtype, seed=5).to(x.device)
        got = torch.autograd.grad(y, wanted, gy)
    assert_all_written(y)
    for name, g in zip(("grad_input", "grad_weight", "grad_bias"), got):
        assert_all_written(g, name)
    ref_leaves = _leaves64(x, w, b)
    y64 = _reference(*ref_leaves, padding, mode, up, activation, stride)
    want = torch.autograd.grad(y64, [t for t in ref_leaves if t is not None], gy.double())
    return y, got, y64, want


def _assert_matches(y, got, y64, want):
    """float32 output and gradients against the float64 reference."""
    assert_close(y, y64, name="output", **tolerance(torch.float32, 4.0))
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        assert a.shape == e.shape, name
        assert_close(a, e, name=name, **tolerance(torch.float32, 10.0))


# ---------------------------------------------------------------------------------------------
# Every backend


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("up", [2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_forward_backward_every_backend(backend, device, mode, up, layout, activation):
    shape, (c, o) = ((1, 3, 4, 3), (3, 4)) if interpreted(backend, device) else \
        ((2, 5, 7, 6), (5, 6))
    x = _input(shape, layout=layout, device=device)
    w, b = _params(c, o, 3, torch.float32, device)
    y, got, y64, want = _forward_backward(backend, x, w, b, 1, mode, up, activation)
    assert y.shape == (shape[0], o, shape[2] * up, shape[3] * up)
    assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last"
                           else torch.contiguous_format)
    _assert_matches(y, got, y64, want)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k,padding,stride", [(3, 1, 1), (3, 2, 2), (1, 0, 1)])
def test_gradcheck(backend, device, mode, k, padding, stride):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64).to(device).requires_grad_()
    w = torch.randn(3, 2, k, k, generator=g, dtype=torch.float64).to(device).requires_grad_()
    b = (torch.randn(3, generator=g, dtype=torch.float64) * 0.3).to(device).requires_grad_()
    with sf.backends.use(backend):
        assert torch.autograd.gradcheck(
            lambda x, w, b: sf.functional.padded_conv2d(x, w, b, stride, padding, mode,
                                                        upsample=2),
            (x, w, b), eps=1e-6, atol=1e-8, fast_mode=interpreted(backend, device))


@pytest.mark.parametrize("backend,device", KERNELS)
def test_wrong_gradients_would_fail(backend, device):
    """The comparison above has teeth: the gradient of the upsampled input taken at one of each
    block's pixels only (not summed), and the correct gradients 5% off, all fail it."""
    shape = (1, 3, 4, 3) if interpreted(backend, device) else (2, 5, 7, 6)
    x = _input(shape, device=device)
    w, b = _params(shape[1], 4, 3, torch.float32, device)
    _, got, _, want = _forward_backward(backend, x, w, b, 1, "reflect", 2)
    tol = tolerance(torch.float32, 10.0)
    assert_close(got[0], want[0], **tol)
    leaves = _leaves64(x, w, b)
    xu = F.interpolate(leaves[0], scale_factor=2.0, mode="nearest").detach().requires_grad_()
    y64 = reference.padded_conv2d_forward(xu, leaves[1], leaves[2], (1, 1), (1, 1), 1, 0)
    gy = _input(y64.shape, seed=5).to(device).double()
    one_pixel = torch.autograd.grad(y64, xu, gy)[0][:, :, ::2, ::2]
    for wrong in (one_pixel, want[0] * 1.05):
        with pytest.raises(AssertionError):
            assert_close(got[0], wrong, **tol)
    with pytest.raises(AssertionError):
        assert_close(got[1], want[1] * 1.05, **tol)


def test_upsample_one_is_the_plain_op():
    x = _input((2, 3, 6, 5))
    w, b = _params(3, 4, 3)
    assert torch.equal(sf.functional.padded_conv2d(x, w, b, 1, 1, "reflect", upsample=1),
                       sf.functional.padded_conv2d(x, w, b, 1, 1, "reflect"))


# ---------------------------------------------------------------------------------------------
# CPU: the fold in Winograd, every algorithm, every level, bfloat16


def _profiled_ops(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


@needs_cpu_kernel
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("mode", MODES)
def test_winograd_folds_the_upsampling(monkeypatch, layout, mode):
    """Winograd forward and weight gradient read the small input and its input gradient is
    summed as it is stored: no upsampling op runs either way, autograd saves no tensor of the
    upsampled size, and the results match the reference."""
    monkeypatch.setitem(sf.config.options, "conv_algo", "winograd")
    x = _input((2, 16, 9, 7), layout=layout).requires_grad_()
    w, b = _params(16, 17, 3)
    w.requires_grad_()
    b.requires_grad_()
    assert cpu_algorithm(x, w, (1, 1), (1, 1), padding_mode_code(mode), upsample=2) == "winograd"
    assert cpu_algorithm(x, w, (1, 1), (1, 1), padding_mode_code(mode), upsample=2,
                         weight_grad=True) == "winograd"
    saved = []

    def step():
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t,
                                                      lambda t: t):
            y = _run("cpu", x, w, b, 1, 1, mode, activation="relu", upsample=2)
        y.backward(torch.randn_like(y))

    ops = _profiled_ops(step)
    # Winograd's input gradient sums each 2x2 block as it stores: no upsampling op either way.
    upsampling = {n for n in ops if "upsample" in n or "interpolate" in n}
    assert not upsampling, f"the folded path ran {upsampling}"
    big = (2, 16, 18, 14)
    assert saved and all(tuple(s) != big for s in saved), saved
    y, got, y64, want = _forward_backward("cpu", x.detach(), w.detach(), b.detach(), 1, mode, 2,
                                          "relu")
    _assert_matches(y, got, y64, want)


@needs_cpu_kernel
@pytest.mark.parametrize("up", [2, 3, 4])
@pytest.mark.parametrize("shape", [(2, 16, 5, 7), (1, 16, 4, 4), (1, 16, 1, 3)])
@pytest.mark.parametrize("mode", MODES)
def test_winograd_factors_and_odd_sizes(monkeypatch, up, shape, mode):
    """Factors 2 and 4 sum inside the Winograd store (tiles hold whole blocks), 3 sums
    afterwards; planes smaller than a tile, odd sizes, one-pixel rows."""
    if mode == "reflect" and min(shape[2:]) * up <= 1:
        pytest.skip("reflect needs pad < size")
    monkeypatch.setitem(sf.config.options, "conv_algo", "winograd")
    x = _input(shape, layout="channels_last")
    w, b = _params(16, 17, 3)
    y, got, y64, want = _forward_backward("cpu", x, w, b, 1, mode, up)
    _assert_matches(y, got, y64, want)


@needs_cpu_kernel
@pytest.mark.parametrize("mode", MODES)
def test_frozen_layer_input_gradient(monkeypatch, mode):
    """Only the input gradient (a frozen layer: the weight needs none), conv + ReLU: for zeros
    padding the ReLU mask is applied in the Winograd load and the blocks summed in its store."""
    monkeypatch.setitem(sf.config.options, "conv_algo", "winograd")
    x = _input((2, 16, 6, 5), layout="channels_last").requires_grad_()
    w, b = _params(16, 24, 3)
    with poisoned_outputs():
        y = _run("cpu", x, w, b, 1, 1, mode, activation="relu", upsample=2)
        gy = _input(y.shape, seed=5)
        (gx,) = torch.autograd.grad(y, x, gy)
    assert_all_written(gx, "grad_input")
    x64 = x.detach().double().requires_grad_()
    y64 = _reference(x64, w.double(), b.double(), 1, mode, 2, "relu")
    (want,) = torch.autograd.grad(y64, x64, gy.double())
    assert_close(gx, want, name="grad_input", **tolerance(torch.float32, 10.0))


@needs_cpu_kernel
@pytest.mark.parametrize("algorithm", ["library", "direct", "winograd"])
@pytest.mark.parametrize("mode", MODES)
def test_every_cpu_algorithm(monkeypatch, algorithm, mode):
    """Forced algorithms: Winograd folds, the others upsample first; all match the reference
    (float32; odd sizes; 3 output channels so that the direct kernel applies)."""
    monkeypatch.setitem(sf.config.options, "conv_algo", algorithm)
    c, o = (16, 17) if algorithm == "winograd" else (4, 3)
    x = _input((2, c, 5, 7), layout="channels_last")
    w, b = _params(c, o, 3)
    assert cpu_algorithm(x, w, (1, 1), (1, 1), padding_mode_code(mode), upsample=2) == algorithm
    y, got, y64, want = _forward_backward("cpu", x, w, b, 1, mode, 2)
    _assert_matches(y, got, y64, want)


@needs_cpu_kernel
@pytest.mark.parametrize("level", LEVELS)
def test_every_isa_level(monkeypatch, level):
    monkeypatch.setitem(sf.config.options, "cpu_isa", None)
    best = torch.ops.stylize_fast.instance_norm_cpu_isa()
    if best not in LEVELS or LEVELS.index(level) > LEVELS.index(best):
        pytest.skip(f"this CPU does not run {level}")
    monkeypatch.setitem(sf.config.options, "cpu_isa", level)
    assert torch.ops.stylize_fast.instance_norm_cpu_isa() == level
    monkeypatch.setitem(sf.config.options, "conv_algo", "winograd")
    x = _input((1, 32, 6, 5), layout="channels_last")
    w, b = _params(32, 24, 3)
    y, got, y64, want = _forward_backward("cpu", x, w, b, 1, "reflect", 2, "relu")
    _assert_matches(y, got, y64, want)


@needs_cpu_kernel
def test_bfloat16_winograd(monkeypatch):
    """bfloat16 through the folded Winograd path against float64 on the same rounded inputs and
    against PyTorch's own bfloat16 interpolate + pad + conv."""
    monkeypatch.setitem(sf.config.options, "conv_algo", "winograd")
    x = _input((2, 64, 6, 5), torch.bfloat16, "channels_last")
    w, b = _params(64, 64, 3, torch.bfloat16)
    y = _run("cpu", x, w, b, 1, 1, "reflect", upsample=2)
    y64 = _reference(*_leaves64(x, w, b), 1, "reflect", 2)
    xu = F.interpolate(x, scale_factor=2.0, mode="nearest")
    baseline = F.conv2d(F.pad(xu, (1, 1, 1, 1), mode="reflect"), w, b)
    assert_half_close(y, y64, terms=64 * 9, baseline=baseline)


@needs_cpu_kernel
@pytest.mark.parametrize("up", [1, 2])
def test_opcheck(up):
    x = _input((1, 16, 5, 4), layout="channels_last").requires_grad_()
    w, b = _params(16, 16, 3)
    args = (x, w.requires_grad_(), b.requires_grad_(), [1, 1], [1, 1], 1, 1, up)
    torch.library.opcheck(torch.ops.stylize_fast.padded_conv2d_fwd.default, args)


@needs_cpu_kernel
def test_torch_compile():
    x = _input((1, 16, 5, 4), layout="channels_last")
    w, b = _params(16, 16, 3)
    fn = torch.compile(lambda x: sf.functional.padded_conv2d(x, w, b, 1, 1, "reflect",
                                                             activation="relu", upsample=2),
                       fullgraph=True, backend="eager")
    y64 = _reference(*_leaves64(x, w, b), 1, "reflect", 2, "relu")
    assert_close(fn(x), y64, name="output", **tolerance(torch.float32, 4.0))


# ---------------------------------------------------------------------------------------------
# Arguments, layer, generators


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                       (True, TypeError), ("2", TypeError)])
def test_bad_upsample(bad, error):
    x = _input((1, 3, 4, 4))
    w, b = _params(3, 4, 3)
    with pytest.raises(error, match="upsample"):
        sf.functional.padded_conv2d(x, w, b, 1, 1, "reflect", upsample=bad)
    with pytest.raises(error, match="upsample"):
        sf.PaddedConv2d(3, 4, 3, padding=1, upsample=bad)


def test_reflect_padding_checked_on_the_upsampled_size():
    """Reflect padding 3 is too large for a 2-pixel plane but fine once it is upsampled to 4."""
    x = _input((1, 3, 2, 2))
    w, b = _params(3, 4, 3)
    with pytest.raises(ValueError, match="reflect padding"):
        sf.functional.padded_conv2d(x, w, b, 1, 3, "reflect")
    y = sf.functional.padded_conv2d(x, w, b, 1, 3, "reflect", upsample=2)
    assert_close(y, _reference(*_leaves64(x, w, b), 3, "reflect", 2),
                 **tolerance(torch.float32, 4.0))


def test_padded_conv2d_layer():
    layer = sf.PaddedConv2d(5, 6, 3, padding=1, activation="relu", upsample=2)
    assert "upsample=2" in repr(layer)
    x = _input((2, 5, 4, 3))
    y64 = _reference(*_leaves64(x, layer.weight, layer.bias), 1, "reflect", 2, "relu")
    assert_close(layer(x), y64, **tolerance(torch.float32, 4.0))
    assert_close(layer(x[0]), y64[0], **tolerance(torch.float32, 4.0))  # unbatched
    assert set(layer.state_dict()) == {"weight", "bias"}


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fused_upsample_layer_matches_plain(layout):
    """UpsampleConvLayer fused (one PaddedConv2d(upsample=2)) against the examples' layout
    (interpolate, ReflectionPad2d, Conv2d) with the same state_dict, forward and gradients."""
    torch.manual_seed(0)
    plain = UpsampleConvLayer(32, 16, 3, 2, "nearest", "reflect", fused=False)
    fused = UpsampleConvLayer(32, 16, 3, 2, "nearest", "reflect", fused=True)
    fused.load_state_dict(plain.state_dict())
    assert isinstance(fused.conv2d, sf.PaddedConv2d) and fused.conv2d.upsample == 2
    x = _input((2, 32, 9, 8), layout=layout)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), fused(xb)
    assert_close(yb, ya, **tolerance(torch.float32, 4.0))
    gy = torch.randn_like(ya)
    ya.backward(gy)
    yb.backward(gy)
    assert_close(xb.grad, xa.grad, name="grad_input", **tolerance(torch.float32, 10.0))
    assert_close(fused.conv2d.weight.grad, plain.conv2d.weight.grad, name="grad_weight",
                 **tolerance(torch.float32, 10.0))


@needs_cpu_kernel
def test_bfloat16_folded_layers_pay_from_32_channels():
    """bfloat16 Winograd pays from 64 channels on both sides, and from 32 when it also saves the
    upsampled copies (JohnsonNet's 64 -> 32 upsampling layer): forward, input and weight
    gradient, as the automatic choice asks them."""
    x = _input((4, 64, 16, 16), torch.bfloat16, "channels_last")
    w, _ = _params(64, 32, 3, torch.bfloat16)
    args = (x, w, (1, 1), (1, 1), 1)
    for kind in ({}, {"input_grad": True}, {"weight_grad": True}):
        assert cpu_algorithm(*args, upsample=2, **kind) == "winograd", kind
        assert cpu_algorithm(*args, **kind) == "library", kind
