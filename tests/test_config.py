"""stylize_fast.config: every STYLIZE_FAST_* variable read once, validated, overridable in code,
and seen by the C++ kernels (csrc/config.h) through set_option."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import stylize_fast as sf
from stylize_fast import config
from stylize_fast.ops import padded_conv
from stylize_fast.testing import make_input

needs_extension = pytest.mark.skipif(not sf.backends.available()["cpu"],
                                     reason="C++ extension not built")

# option -> (valid values as set in the environment, the parsed value of each, bad values)
CASES = {
    "backend": (["auto", "cpu", "reference", "triton", "cuda", " REFERENCE "],
                ["auto", "cpu", "reference", "triton", "cuda", "reference"],
                ["gpu", "1", "cpu,reference"]),
    "cpu_isa": (["default", "avx2", "avx512", "avx512_bf16"],
                ["default", "avx2", "avx512", "avx512_bf16"],
                ["sse9", "AVX2", "avx512-bf16", "auto"]),
    "cpu_stream_bytes": (["0", "4096", "1048576"], [0, 4096, 1048576], ["-1", "1k", "x", "1.5"]),
    "conv_algo": (["auto", "library", "direct", "winograd"],
                  ["auto", "library", "direct", "winograd"], ["fastest", "Direct", "none"]),
    "winograd_block": (["1", "12", "96"], [1, 12, 96], ["0", "-6", "12x", "many"]),
    "no_malloc_tuning": (["1", "0", "true", "off", "Yes"], [True, False, True, False, True],
                         ["2", "maybe"]),
    "no_norm_on_load": (["1", "0", "on"], [True, False, True], ["2", "never"]),
    "bench_threads": (["1", "16"], [1, 16], ["0", "-2", "four"]),
    "train_cache_mb": (["0", "1024", " 64 "], [0, 1024, 64], ["-1", "1g", "lots"]),
    "large": (["1", "0", "on"], [True, False, True], ["large", "10"]),
}
UNSET = {"backend": "auto", "cpu_isa": None, "cpu_stream_bytes": None, "conv_algo": "auto",
         "winograd_block": None, "no_malloc_tuning": False, "bench_threads": None, "large": False,
         "train_cache_mb": None, "no_norm_on_load": False}


def test_every_option_has_cases_and_a_documented_row():
    assert set(CASES) == set(config.OPTIONS) == set(UNSET)
    assert all(o.variable.startswith("STYLIZE_FAST_") for o in config.OPTIONS.values())
    # Table rows: variable and option columns, both literals (the build switches are prose).
    rows = [line.split() for line in config.__doc__.splitlines()
            if line.startswith("``STYLIZE_FAST_") and line.split()[1].startswith("``")]
    assert [(o.variable, o.name) for o in config.OPTIONS.values()] == \
        [(row[0].strip("`"), row[1].strip("`")) for row in rows]
    for variable in config.BUILD_VARIABLES:
        assert f"``{variable}=1``" in config.__doc__


@pytest.mark.parametrize("name", sorted(CASES))
def test_environment_values(name):
    variable = config.OPTIONS[name].variable
    good, parsed, bad = CASES[name]
    for value, want in zip(good, parsed):
        assert config.from_environ({variable: value})[name] == want
    assert config.from_environ({})[name] == UNSET[name]
    assert config.from_environ({variable: ""})[name] == UNSET[name]
    for value in bad:
        with pytest.raises(config.ConfigError, match=f"environment variable {variable} must be") as e:
            config.from_environ({variable: value})
        assert repr(value) in str(e.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_override_sets_and_restores(name):
    variable = config.OPTIONS[name].variable
    before = config.get(name)
    good, parsed, bad = CASES[name]
    for value, want in zip(good, parsed):
        with config.override(**{name: value}):
            assert config.get(name) == want
            assert config.values()[name] == want
            with config.override(**{name: None}):
                assert config.get(name) == UNSET[name]
            assert config.get(name) == want
        assert config.get(name) == before
    for value in bad:
        with pytest.raises(config.ConfigError, match=f"override\\({name}=...\\): {variable} must"):
            with config.override(**{name: value}):
                pass
        assert config.get(name) == before


def test_override_restores_after_an_error_and_a_bad_later_option():
    before = config.values()
    with pytest.raises(KeyError):
        with config.override(conv_algo="direct", winograd_block=7):
            raise KeyError("boom")
    assert config.values() == before
    with pytest.raises(config.ConfigError, match="STYLIZE_FAST_WINOGRAD_BLOCK"):
        with config.override(conv_algo="direct", winograd_block=0):
            pass
    assert config.values() == before


def test_unknown_option_is_an_error():
    with pytest.raises(config.ConfigError, match="unknown option 'conv_algorithm'"):
        with config.override(conv_algorithm="direct"):
            pass
    with pytest.raises(config.ConfigError, match="unknown option"):
        config.get("nope")


def test_typed_values_in_code():
    with config.override(winograd_block=24, cpu_stream_bytes=0, large=True, no_malloc_tuning=1):
        assert config.get("winograd_block") == 24 and config.get("cpu_stream_bytes") == 0
        assert config.get("large") is True and config.get("no_malloc_tuning") is True
    for bad in (2.5, True, "2.5"):
        with pytest.raises(config.ConfigError, match="STYLIZE_FAST_WINOGRAD_BLOCK must be a positive"):
            with config.override(winograd_block=bad):
                pass


def test_aten_cpu_capability_caps_when_ours_is_unset():
    assert config.from_environ({"ATEN_CPU_CAPABILITY": "avx2"})["cpu_isa"] == "avx2"
    assert config.from_environ({"ATEN_CPU_CAPABILITY": "zvector"})["cpu_isa"] is None
    both = {"ATEN_CPU_CAPABILITY": "avx2", "STYLIZE_FAST_CPU_ISA": "avx512"}
    assert config.from_environ(both)["cpu_isa"] == "avx512"


def test_options_mapping_with_monkeypatch(monkeypatch):
    before = config.get("conv_algo")
    monkeypatch.setitem(config.options, "conv_algo", "library")
    assert config.get("conv_algo") == "library" and config.options["conv_algo"] == "library"
    assert sorted(config.options) == sorted(config.OPTIONS) and len(config.options) == len(CASES)
    with pytest.raises(TypeError, match="assign None"):
        del config.options["conv_algo"]
    monkeypatch.undo()
    assert config.get("conv_algo") == before


# --------------------------------------------------------------------------------------------
# The C++ side sees every change.

CPP_OPTIONS = ("cpu_isa", "cpu_stream_bytes", "conv_algo", "winograd_block")


@needs_extension
def test_cpp_options_follow_python():
    ops = torch.ops.stylize_fast
    assert {n for n, o in config.OPTIONS.items() if o.cpp} == set(CPP_OPTIONS)
    for name in CPP_OPTIONS:
        good, parsed, _ = CASES[name]
        before = ops.get_option(name)
        for value, want in zip(good, parsed):
            with config.override(**{name: value}):
                assert ops.get_option(name) == ("" if want == "auto" else str(want))
            assert ops.get_option(name) == before


@needs_extension
def test_cpp_rejects_bad_values_itself():
    ops = torch.ops.stylize_fast
    for name, variable, bad in (("cpu_isa", "STYLIZE_FAST_CPU_ISA", "sse9"),
                                ("cpu_stream_bytes", "STYLIZE_FAST_CPU_STREAM_BYTES", "-1"),
                                ("conv_algo", "STYLIZE_FAST_CONV_ALGO", "fastest"),
                                ("winograd_block", "STYLIZE_FAST_WINOGRAD_BLOCK", "0")):
        before = ops.get_option(name)
        with pytest.raises(RuntimeError, match=f"{variable} must be"):
            ops.set_option(name, bad)
        assert ops.get_option(name) == before
    with pytest.raises(RuntimeError, match="unknown option 'nope'"):
        ops.set_option("nope", "1")


@needs_extension
def test_conv_algo_override_changes_the_kernels_choice():
    x = make_input((1, 32, 16, 16), layout="channels_last")
    w = torch.randn(32, 32, 3, 3)
    with config.override(conv_algo=None):
        auto = padded_conv.cpu_algorithm(x, w, (1, 1), (1, 1), 1)
    assert auto == "winograd"
    for forced in ("library", "winograd"):
        with config.override(conv_algo=forced):
            assert padded_conv.cpu_algorithm(x, w, (1, 1), (1, 1), 1) == forced
    with config.override(conv_algo="direct"):  # cannot run this layer: the kernel says so
        with pytest.raises(RuntimeError, match="STYLIZE_FAST_CONV_ALGO=direct but"):
            torch.ops.stylize_fast.padded_conv2d_fwd(x, w, None, [1, 1], [1, 1], 1)


@needs_extension
def test_cpu_isa_override_caps_the_kernels_level():
    ops = torch.ops.stylize_fast
    with config.override(cpu_isa=None):
        best = ops.instance_norm_cpu_isa()
    with config.override(cpu_isa="default"):
        assert ops.instance_norm_cpu_isa() == "default"
        with config.override(cpu_isa=None):
            assert ops.instance_norm_cpu_isa() == best
        assert ops.instance_norm_cpu_isa() == "default"


def test_backend_override_forces_the_backend():
    x = torch.randn(1, 2, 3, 3)
    with config.override(backend="reference"):
        assert sf.backends.forced() == "reference"
        assert sf.backends.select("instance_norm", x, None, None)[0] == "reference"
        with sf.backends.use("reference"):  # use() still wins inside
            assert sf.backends.forced() == "reference"


def test_malloc_opt_out_follows_config():
    from stylize_fast.inference import allocator

    with config.override(no_malloc_tuning=True):
        assert allocator.opted_out()
    with config.override(no_malloc_tuning=False):
        assert not allocator.opted_out()


# --------------------------------------------------------------------------------------------
# The environment is read at import.

def _run(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("STYLIZE_FAST_")}
    full.update(env, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          timeout=300)


def test_environment_is_read_at_import_and_pushed_to_cpp():
    code = ("import torch, stylize_fast as sf; print(sf.config.get('conv_algo'), "
            "sf.config.get('winograd_block'), sf.config.get('backend'), "
            "torch.ops.stylize_fast.get_option('conv_algo') if sf.backends.available()['cpu'] "
            "else 'direct')")
    done = _run({"STYLIZE_FAST_CONV_ALGO": "direct", "STYLIZE_FAST_WINOGRAD_BLOCK": "24",
                 "STYLIZE_FAST_BACKEND": "reference"}, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["direct", "24", "reference", "direct"]


def test_bad_environment_fails_at_import_naming_the_variable():
    done = _run({"STYLIZE_FAST_CONV_ALGO": "fastest"}, "import stylize_fast")
    assert done.returncode != 0
    assert ("ConfigError: environment variable STYLIZE_FAST_CONV_ALGO must be one of auto, "
            "library, direct, winograd (or unset), got 'fastest'") in done.stderr
