"""The bfloat16 mean squared error kernel (stylize_fast.ops.mse, csrc/cpu/mse_cpu.cpp): the loss
against float64 on the same bfloat16 values, its gradient by the half-precision rule, every
instruction-set level, contiguous and channels-last, sizes off the vector width and over several
chunks, the same bits for any thread count, errors, opcheck, and the content loss using it."""

from __future__ import annotations

import pytest
import torch

import stylize_fast as sf
from stylize_fast.ops import mse
from stylize_fast.testing import assert_all_written, assert_half_close, poisoned_outputs
from stylize_fast.training.losses import content_loss

pytestmark = pytest.mark.skipif(not mse.available(), reason="the C++ extension is not built")

LEVELS = ["default", "avx2", "avx512", "avx512_bf16"]
# Relative error of the loss: measured 3e-7 at 8.4M elements; a loss from bfloat16-rounded
# differences is off by about 6e-6 (test_loss_has_teeth).
LOSS_RTOL = 2e-6
# (shape, layout): odd sizes, one element, several 65536-element chunks with a tail
CASES = [((2, 3, 5, 7), "contiguous"), ((1,), "contiguous"), ((3, 17, 40, 33), "channels_last"),
         ((4, 64, 32, 33), "contiguous")]


def _pair(shape, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(shape, generator=g).bfloat16() for _ in range(2))
    if layout == "channels_last":
        a, b = (t.contiguous(memory_format=torch.channels_last) for t in (a, b))
    return a, b


def _supported_levels():
    with sf.config.override(cpu_isa=None):
        best = torch.ops.stylize_fast.instance_norm_cpu_isa()
    return LEVELS[: LEVELS.index(best) + 1] if best in LEVELS else [best]


@pytest.fixture(params=LEVELS)
def level(request):
    if request.param not in _supported_levels():
        pytest.skip(f"this CPU does not run {request.param}")
    with sf.config.override(cpu_isa=request.param):
        yield request.param


@pytest.mark.parametrize("shape,layout", CASES, ids=str)
def test_loss_and_gradient(level, shape, layout):
    a, b = _pair(shape, layout)
    want = ((a.double() - b.double()) ** 2).mean()
    got = torch.ops.stylize_fast.mse_bf16(a, b)
    assert got.dtype == torch.float32 and got.dim() == 0
    # differences exact, squares summed in float32 lanes over chunks of 65536, chunks in double
    assert abs(got.item() - want.item()) <= LOSS_RTOL * want.item()
    grad = torch.tensor(1.7)
    with poisoned_outputs():
        g = torch.ops.stylize_fast.mse_bf16_backward(grad, a, b)
    assert_all_written(g, "grad")
    assert g.dtype == torch.bfloat16 and g.stride() == a.stride()
    g_want = 1.7 * 2 * (a.double() - b.double()) / a.numel()
    baseline = (1.7 * 2 * (a.float() - b.float()) / a.numel()).bfloat16()
    assert_half_close(g, g_want, baseline=baseline, name="grad")
    with pytest.raises(AssertionError):
        assert_half_close(g, g_want * 1.05, baseline=baseline, name="grad")


def test_loss_has_teeth():
    """A loss computed from bfloat16-rounded differences, or missing one element, fails."""
    a, b = _pair((3, 17, 40, 33), "channels_last")
    got = torch.ops.stylize_fast.mse_bf16(a, b).item()
    want = ((a.double() - b.double()) ** 2).mean().item()
    tol = LOSS_RTOL * want
    assert abs(got - want) <= tol
    rounded = ((a - b).double() ** 2).mean().item()
    assert abs(rounded - want) > tol
    dropped = want - (a.flatten()[0].double() - b.flatten()[0].double()) ** 2 / a.numel()
    assert abs(dropped.item() - want) > tol or (a.flatten()[0] == b.flatten()[0])


def test_same_bits_for_any_thread_count():
    a, b = _pair((4, 64, 32, 33), "contiguous")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.stylize_fast.mse_bf16(a, b)
        torch.set_num_threads(max(2, threads))
        many = torch.ops.stylize_fast.mse_bf16(a, b)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_errors():
    a, b = _pair((2, 3, 4, 5), "contiguous")
    with pytest.raises(RuntimeError, match="bfloat16"):
        torch.ops.stylize_fast.mse_bf16(a.float(), b)
    with pytest.raises(RuntimeError, match="same shape"):
        torch.ops.stylize_fast.mse_bf16(a, b[:1])
    with pytest.raises(RuntimeError, match="same strides"):
        torch.ops.stylize_fast.mse_bf16(a, b.contiguous(memory_format=torch.channels_last))
    with pytest.raises(RuntimeError, match="empty"):
        torch.ops.stylize_fast.mse_bf16(a[:0], b[:0])
    with pytest.raises(RuntimeError, match="scalar"):
        torch.ops.stylize_fast.mse_bf16_backward(torch.ones(2), a, b)
    with pytest.raises(ValueError, match="bfloat16"):
        mse.mse(a.float(), b.float())


def test_opcheck():
    a, b = _pair((2, 3, 4, 5), "channels_last")
    torch.library.opcheck(torch.ops.stylize_fast.mse_bf16.default, (a, b))
    torch.library.opcheck(torch.ops.stylize_fast.mse_bf16_backward.default,
                          (torch.tensor(0.5), a, b))


def test_content_loss_uses_it_and_both_inputs_get_gradients():
    a, b = _pair((2, 16, 9, 8), "channels_last")
    a.requires_grad_()
    b.requires_grad_()
    with torch.profiler.profile() as prof:
        loss = content_loss(a, b)
    assert "stylize_fast::mse_bf16" in {e.name for e in prof.events()}
    af, bf = (t.detach().float().requires_grad_() for t in (a, b))
    want = torch.nn.functional.mse_loss(af, bf)
    assert abs(loss.item() - want.item()) <= 1e-6 * want.item()
    ga, gb = torch.autograd.grad(loss, (a, b))
    wa, wb = torch.autograd.grad(want, (af, bf))
    assert_half_close(ga, wa.double(), baseline=wa.bfloat16(), name="grad a")
    assert_half_close(gb, wb.double(), baseline=wb.bfloat16(), name="grad b")
