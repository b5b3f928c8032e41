"""Backend registry: availability is truthful, forcing works or fails clearly, the automatic
choice never picks a backend that cannot run."""

from __future__ import annotations

import pytest
import torch

import stylize_fast as sf
from stylize_fast import _extension, backends


def test_available_keys_and_reference_always_there():
    avail = sf.backends.available()
    assert set(avail) == {"cpu", "cuda", "triton", "reference"}
    assert avail["reference"] is True
    assert avail["cpu"] == _extension.loaded()
    assert avail["cuda"] == (_extension.compiled_with_cuda() and torch.cuda.is_available())


def test_use_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        with sf.backends.use("tpu"):
            pass


@pytest.mark.parametrize("name", ["cpu", "cuda", "triton"])
def test_use_unavailable_backend_raises(name, monkeypatch):
    if sf.backends.available()[name]:
        monkeypatch.setattr(backends, "available",
                            lambda: {**{k: True for k in backends.BACKENDS}, name: False})
    with pytest.raises(RuntimeError, match=f"backend '{name}' is not available"):
        with sf.backends.use(name):
            pass


def test_use_nests_and_restores():
    assert backends.forced() is None
    with sf.backends.use("reference"):
        assert backends.forced() == "reference"
        name, _ = backends.select("instance_norm", torch.randn(1, 1, 2, 2), None, None)
        assert name == "reference"
    assert backends.forced() is None


def test_environment_variable_sets_default(monkeypatch):
    assert sf.config.from_environ({backends.ENV_VAR: " Reference"})["backend"] == "reference"
    monkeypatch.setitem(sf.config.options, "backend", "reference")
    assert backends.select("instance_norm", torch.randn(1, 1, 2, 2), None, None)[0] == "reference"
    with pytest.raises(ValueError, match="STYLIZE_FAST_BACKEND"):
        sf.config.from_environ({backends.ENV_VAR: "bogus"})
    with pytest.raises(ValueError, match="STYLIZE_FAST_BACKEND"):
        monkeypatch.setitem(sf.config.options, "backend", "bogus")
    assert backends.forced() == "reference"  # the bad value was not taken
    monkeypatch.setitem(sf.config.options, "backend", "auto")
    assert backends.forced() is None


def test_forced_backend_that_rejects_the_input_raises():
    backends.register(
        "_test_op", "reference", lambda x: x, devices=None,
        supports=lambda x: "odd widths are not supported" if x.shape[-1] % 2 else None)
    try:
        with sf.backends.use("reference"):
            with pytest.raises(RuntimeError, match="odd widths are not supported"):
                backends.select("_test_op", torch.randn(1, 3))
    finally:
        backends._REGISTRY.pop("_test_op")


def test_automatic_choice_skips_backends_that_cannot_run(monkeypatch):
    calls = []
    backends.register(
        "_test_op", "cpu", lambda x: calls.append("cpu"), devices=("cpu",),
        supports=lambda x: "float64 unsupported" if x.dtype == torch.float64 else None)
    backends.register("_test_op", "reference", lambda x: calls.append("ref"), devices=None)
    monkeypatch.setattr(backends, "available",
                        lambda: {"cpu": True, "cuda": False, "triton": False, "reference": True})
    try:
        assert backends.select("_test_op", torch.randn(2))[0] == "cpu"
        assert backends.select("_test_op", torch.randn(2, dtype=torch.float64))[0] == "reference"
        with pytest.raises(RuntimeError, match="no implementation of '_nope'"):
            backends.select("_nope", torch.randn(2))
    finally:
        backends._REGISTRY.pop("_test_op")


def test_register_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.register("_test_op", "mps", lambda x: x, devices=None)


def test_triton_availability_follows_interpreter_flag(monkeypatch):
    if not backends._triton_importable():
        pytest.skip("triton not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert sf.backends.available()["triton"]
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        assert not sf.backends.available()["triton"]
        assert "TRITON_INTERPRET=1" in backends.unavailable_reason("triton")


def test_info_command_reports_backends(capsys):
    from stylize_fast.cli import main

    assert main(["info", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"backends"' in out and '"reference": true' in out


def test_auto_false_is_skipped_automatically_but_runs_when_forced(monkeypatch):
    backends.register("_test_op", "cpu", lambda x: "cpu", devices=("cpu",), auto=False)
    backends.register("_test_op", "reference", lambda x: "ref", devices=None)
    monkeypatch.setattr(backends, "available",
                        lambda: {"cpu": True, "cuda": False, "triton": False, "reference": True})
    try:
        assert backends.select("_test_op", torch.randn(2))[0] == "reference"
        backends._forced_stack.append("cpu")
        try:
            assert backends.select("_test_op", torch.randn(2))[0] == "cpu"
        finally:
            backends._forced_stack.pop()
    finally:
        backends._REGISTRY.pop("_test_op")


def test_extension_is_built_with_openmp():
    # at::parallel_for is a header template that silently runs on one thread unless the
    # extension is compiled with -fopenmp; the library then imports libgomp's GOMP_parallel.
    if not sf.backends.available()["cpu"]:
        pytest.skip("needs the C++ extension")
    import subprocess

    import stylize_fast._C as ext

    out = subprocess.run(["nm", "-D", "--undefined-only", ext.__file__], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip("nm not available")
    assert "GOMP_parallel" in out.stdout, "stylize_fast._C was compiled without -fopenmp"
