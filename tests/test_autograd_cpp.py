"""Tests of the C++ autograd registration of the compiled ops (csrc/autograd.cpp): every
combination of present / absent / frozen optional tensors reaches the right gradient (autograd
numbers the edges of present tensors only), the backward asks the kernel only for what is
needed, full opcheck including AOT dispatch, and the no-grad path records no graph.

Gradient values of every backend are checked in test_instance_norm.py / test_padded_conv.py."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import stylize_fast as sf
from stylize_fast.ops import instance_norm_reference, padded_conv_reference
from stylize_fast.testing import assert_close, make_input

pytestmark = pytest.mark.skipif(not sf.backends.available()["cpu"],
                                reason="C++ extension not built")

ops = torch.ops.stylize_fast
F64 = dict(atol=1e-10, rtol=1e-9)


def _leaf(t: torch.Tensor | None, wanted: bool) -> torch.Tensor | None:
    return None if t is None else t.detach().clone().requires_grad_(wanted)


def _check_against_reference(op, reference_op, tensors, need, args, gen):
    """op(*tensors, *args) and reference_op on separate leaves (requires_grad per need): same
    output, and the same gradient for every present tensor that requires one."""
    got_in = [_leaf(t, n) for t, n in zip(tensors, need)]
    ref_in = [_leaf(t, n) for t, n in zip(tensors, need)]
    y = op(*got_in, *args)
    y_ref = reference_op(*ref_in, *args)
    assert_close(y, y_ref, **F64)
    gy = make_input(y.shape, torch.float64, generator=gen)
    wanted = [i for i, t in enumerate(got_in) if t is not None and t.requires_grad]
    grads = torch.autograd.grad(y, [got_in[i] for i in wanted], gy)
    grads_ref = torch.autograd.grad(y_ref, [ref_in[i] for i in wanted], gy)
    for i, g, g_ref in zip(wanted, grads, grads_ref):
        assert g.shape == got_in[i].shape
        assert_close(g, g_ref, **F64)


# (weight present, bias present) x which of (input, weight, bias) require grad
IN_CASES = [
    pytest.param(has_w, has_b, need, id=f"w{int(has_w)}b{int(has_b)}-need{''.join(map(str, map(int, need)))}")
    for has_w, has_b in itertools.product([True, False], repeat=2)
    for need in itertools.product([True, False], repeat=3)
    if any(need[i] and present for i, present in enumerate((True, has_w, has_b)))
]


@pytest.mark.parametrize("has_w,has_b,need", IN_CASES)
def test_instance_norm_gradients_reach_the_right_tensor(has_w, has_b, need):
    gen = torch.Generator().manual_seed(3)
    x0 = make_input((2, 3, 5, 4), torch.float64, generator=gen)
    w0 = torch.rand(3, generator=gen, dtype=torch.float64) + 0.5 if has_w else None
    b0 = torch.randn(3, generator=gen, dtype=torch.float64) if has_b else None
    _check_against_reference(
        lambda *a: ops.instance_norm_fwd(*a)[0],
        lambda *a: instance_norm_reference.instance_norm_forward(*a)[0],
        (x0, w0, b0), need, (1e-5, 2, 0.1), gen)


def test_instance_norm_statistics_are_not_differentiable():
    x = make_input((1, 2, 3, 3), torch.float64, requires_grad=True)
    y, mean, rstd = ops.instance_norm_fwd(x, None, None, 1e-5, 1, 0.0)
    assert y.requires_grad and not mean.requires_grad and not rstd.requires_grad


class _RecordBackwardMasks(TorchDispatchMode):
    """Records the output_mask of every stylize_fast::*_bwd call dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.masks: dict[str, list[list[bool]]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.name()
        if name.startswith("stylize_fast::") and name.endswith("_bwd"):
            schema_args = func._schema.arguments
            index = next(i for i, a in enumerate(schema_args) if a.name == "output_mask")
            mask = kwargs["output_mask"] if "output_mask" in kwargs else args[index]
            self.masks.setdefault(name.split("::")[1], []).append(list(mask))
        return func(*args, **kwargs)


def test_instance_norm_grad_of_one_input_only():
    # autograd.grad for x alone: the kernel is asked for grad_input only, and w / b get none.
    x = make_input((2, 3, 4, 4), torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    with _RecordBackwardMasks() as seen:
        y = ops.instance_norm_fwd(x, w, b, 1e-5, 1, 0.0)[0]
        (gx,) = torch.autograd.grad(y.sum(), [x])
    assert seen.masks == {"instance_norm_bwd": [[True, False, False]]}
    assert gx.shape == x.shape and w.grad is None and b.grad is None


@pytest.mark.parametrize("wanted,mask", [("x", [True, False, False]), ("w", [False, True, False]),
                                         ("b", [False, False, True]),
                                         ("wb", [False, True, True])])
def test_backward_masks_follow_what_is_needed(wanted, mask):
    # The C++ autograd asks each kernel for exactly the gradients autograd.grad needs.
    x = make_input((2, 3, 6, 5), torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    cw = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    cb = torch.randn(4, dtype=torch.float64, requires_grad=True)
    with _RecordBackwardMasks() as seen:
        y = ops.instance_norm_fwd(x, w, b, 1e-5, 1, 0.0)[0]
        torch.autograd.grad(y.sum(), [{"x": x, "w": w, "b": b}[c] for c in wanted])
        z = ops.padded_conv2d_fwd(x.detach(), cw, cb, [1, 1], [1, 1], 1) if wanted != "x" else \
            ops.padded_conv2d_fwd(x, cw.detach(), cb.detach(), [1, 1], [1, 1], 1)
        torch.autograd.grad(z.sum(), [{"x": x, "w": cw, "b": cb}[c] for c in wanted])
    assert seen.masks == {"instance_norm_bwd": [mask], "padded_conv2d_bwd": [mask]}


CONV_CASES = [
    pytest.param(has_b, need, id=f"b{int(has_b)}-need{''.join(map(str, map(int, need)))}")
    for has_b in (True, False)
    for need in itertools.product([True, False], repeat=3)
    if need[0] or need[1] or (need[2] and has_b)
]


@pytest.mark.parametrize("has_bias,need", CONV_CASES)
def test_padded_conv_gradients_reach_the_right_tensor(has_bias, need):
    gen = torch.Generator().manual_seed(4)
    x0 = make_input((2, 3, 7, 6), torch.float64, generator=gen)
    w0 = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    b0 = torch.randn(4, generator=gen, dtype=torch.float64) if has_bias else None
    _check_against_reference(
        lambda x, w, b, *a: ops.padded_conv2d_fwd(x, w, b, [2, 1], [1, 2], *a),
        lambda x, w, b, *a: padded_conv_reference.padded_conv2d_forward(x, w, b, (2, 1), (1, 2),
                                                                         *a),
        (x0, w0, b0), need, (1,), gen)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_opcheck_instance_norm_all_utils(layout, affine):
    # Default opcheck utilities include test_aot_dispatch_dynamic: AOTAutograd traces through the
    # C++ autograd kernel with fake tensors.
    x = make_input((2, 3, 5, 6), torch.float64, layout, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True) if affine in ("both", "weight") \
        else None
    b = torch.randn(3, dtype=torch.float64, requires_grad=True) if affine in ("both", "bias") \
        else None
    torch.library.opcheck(ops.instance_norm_fwd, (x, w, b, 1e-5, 2, 0.1))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("has_bias", [True, False])
def test_opcheck_padded_conv_all_utils(layout, has_bias):
    x = make_input((2, 3, 6, 7), torch.float64, layout, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True) if has_bias else None
    torch.library.opcheck(ops.padded_conv2d_fwd, (x, w, b, [2, 2], [1, 1], 1))


def test_no_grad_records_no_graph():
    x = make_input((1, 2, 4, 4), requires_grad=True)
    with torch.no_grad():
        y = ops.instance_norm_fwd(x, None, None, 1e-5, 1, 0.0)[0]
        z = ops.padded_conv2d_fwd(x, torch.randn(2, 2, 3, 3), None, [1, 1], [1, 1], 1)
    assert y.grad_fn is None and not y.requires_grad
    assert z.grad_fn is None and not z.requires_grad
