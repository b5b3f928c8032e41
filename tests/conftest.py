"""Shared fixtures. Without a GPU, Triton kernels run in Triton's CPU interpreter: the variable
must be set before any @triton.jit kernel is defined, so it is set here, before imports.

STYLIZE_FAST_LARGE=1 adds large shapes (meant for a GPU machine: scripts/verify_gpu.sh)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import stylize_fast as sf  # noqa: E402

LARGE = sf.config.get("large")  # STYLIZE_FAST_LARGE
# Backends that run on CPU tensors on this machine, the reference last (it is also ground truth).
CPU_TENSOR_BACKENDS = [b for b in ("cpu", "triton", "reference") if sf.backends.available()[b]]
CUDA_TENSOR_BACKENDS = [b for b in ("cuda", "triton", "reference")
                        if torch.cuda.is_available() and sf.backends.available()[b]]


def backend_ids(op: str) -> list[str]:
    """Backends with an implementation of ``op`` that can run on CPU tensors here."""
    impls = sf.backends.implementations(op)
    return [b for b in CPU_TENSOR_BACKENDS if b in impls]


def backend_devices(op: str) -> list:
    """pytest params (backend, device) for every backend of ``op`` runnable here, with ids like
    ``cpu-cpu`` or ``triton-cuda``."""
    impls = sf.backends.implementations(op)
    pairs = [(b, "cpu") for b in CPU_TENSOR_BACKENDS if b in impls]
    pairs += [(b, "cuda") for b in CUDA_TENSOR_BACKENDS if b in impls]
    return [pytest.param(b, d, id=f"{b}-{d}") for b, d in pairs]


def interpreted(backend: str, device: str) -> bool:
    """True for Triton kernels running in the (slow) CPU interpreter: use small shapes."""
    return backend == "triton" and device == "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
