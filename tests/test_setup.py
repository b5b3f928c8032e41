"""setup.py's choice of a CUDA build, with a stand-in torch and toolkit: a GPU-less machine with
nvcc and a CUDA torch (what an isolated `pip install .` meets here) builds CPU-only unless told
which architectures to build for."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup_module(monkeypatch, tmp_path):
    """setup.py's functions (everything before it calls setup()), a fake CUDA toolkit and a CUDA
    torch without a GPU."""
    src = (ROOT / "setup.py").read_text().split("ext_modules, cmdclass = _maybe_extensions()")[0]
    ns = {"__file__": str(ROOT / "setup.py"), "__name__": "setup_under_test"}
    exec(compile(src, "setup.py", "exec"), ns)
    toolkit = tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "bin" / "nvcc").write_text("")
    (toolkit / "include" / "cuda_runtime.h").write_text("")
    monkeypatch.chdir(ROOT)
    for name in ("STYLIZE_FAST_FORCE_CUDA", "STYLIZE_FAST_NO_CUDA", "TORCH_CUDA_ARCH_LIST",
                 "CUDA_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    torch = types.SimpleNamespace(__version__="2.14.1+cu130",
                                  version=types.SimpleNamespace(cuda="13.0"),
                                  cuda=types.SimpleNamespace(is_available=lambda: False))
    cpp_extension = types.SimpleNamespace(CUDA_HOME=None)
    return ns, torch, cpp_extension


def test_no_gpu_and_no_arch_list_builds_cpu_only(setup_module):
    ns, torch, cpp_extension = setup_module
    build, reason = ns["_want_cuda"](torch, cpp_extension)
    assert not build
    assert "no GPU visible" in reason and "TORCH_CUDA_ARCH_LIST" in reason


def test_arch_list_or_force_builds_cuda(setup_module, monkeypatch):
    ns, torch, cpp_extension = setup_module
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    assert ns["_want_cuda"](torch, cpp_extension)[0]
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "9.0"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.setenv("STYLIZE_FAST_FORCE_CUDA", "1")
    assert ns["_want_cuda"](torch, cpp_extension)[0]
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == ns["DEFAULT_CUDA_ARCHS"]


def test_cpu_torch_builds_cpu_only(setup_module):
    ns, torch, cpp_extension = setup_module
    torch.version.cuda = None
    build, reason = ns["_want_cuda"](torch, cpp_extension)
    assert not build and "CPU-only build" in reason
