"""Shared fixtures. Without a GPU, Triton kernels run in Triton's CPU interpreter: the variable
must be set before any @triton.jit kernel is defined, so it is set here, before imports."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import stylize_fast as sf  # noqa: E402

# Backends that run on CPU tensors on this machine, the reference last (it is also ground truth).
CPU_TENSOR_BACKENDS = [b for b in ("cpu", "triton", "reference") if sf.backends.available()[b]]


def backend_ids(op: str) -> list[str]:
    """Backends with an implementation of ``op`` that can run on CPU tensors here."""
    impls = sf.backends.implementations(op)
    return [b for b in CPU_TENSOR_BACKENDS if b in impls]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
