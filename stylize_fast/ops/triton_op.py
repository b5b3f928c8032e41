"""``define_op``: how every Triton backend (``*_triton.py``) turns its host function into a
``torch.ops.stylize_fast`` op, compiled or interpreted."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import config


def define_op(name: str, fn: Callable, fake: Callable, schema: str | None = None):
    """Op ``name`` ("stylize_fast::...") running ``fn``; ``fake`` computes output metadata."""
    if config.triton_interpreted():
        # Interpreted kernels need real data pointers and cannot be traced into a graph, so the
        # op is opaque to torch.compile, with an explicit fake.
        op = torch.library.custom_op(name, fn, mutates_args=(), schema=schema)
        op.register_fake(fake)
        return op
    # The host function is traceable with fake tensors and doubles as the fake implementation.
    return torch.library.triton_op(name, fn, mutates_args=(), schema=schema)
