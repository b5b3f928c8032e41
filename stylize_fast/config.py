"""Runtime options: every ``STYLIZE_FAST_*`` environment variable, read once here at import,
validated, and pushed to the C++ kernels (csrc/config.h) through ``stylize_fast::set_option``.

=================================  ====================  =====================================================
Variable                           Option                Values (unset: the automatic default)
=================================  ====================  =====================================================
``STYLIZE_FAST_BACKEND``           ``backend``           ``auto``, ``cpu``, ``cuda``, ``triton``,
                                                         ``reference``: the backend every op runs (as
                                                         ``backends.use``)
``STYLIZE_FAST_CPU_ISA``           ``cpu_isa``           unset (the CPU's best), ``default``, ``avx2``,
                                                         ``avx512``, ``avx512_bf16``: caps the C++ CPU
                                                         kernels' vector level; when unset, torch's
                                                         ``ATEN_CPU_CAPABILITY`` caps it if it names one of
                                                         these
``STYLIZE_FAST_CPU_STREAM_BYTES``  ``cpu_stream_bytes``  unset (half the last-level cache) or an integer >= 0:
                                                         CPU instance-norm outputs at least this large use
                                                         streaming stores
``STYLIZE_FAST_CONV_ALGO``         ``conv_algo``         ``auto``, ``library``, ``direct``, ``winograd``:
                                                         forces the CPU convolution algorithm (an error where
                                                         it cannot run)
``STYLIZE_FAST_WINOGRAD_BLOCK``    ``winograd_block``    unset or a positive integer: Winograd tiles per block
                                                         (tuning only)
``STYLIZE_FAST_NO_MALLOC_TUNING``  ``no_malloc_tuning``  ``0`` / ``1`` (also false/true, no/yes, off/on):
                                                         inference (``Stylizer``) keeps glibc malloc's
                                                         defaults
``STYLIZE_FAST_NO_NORM_ON_LOAD``   ``no_norm_on_load``   ``0`` / ``1``: fused generators run each instance
                                                         norm as its own layer instead of normalising as
                                                         the next convolution loads (for comparison)
``STYLIZE_FAST_BENCH_THREADS``     ``bench_threads``     unset or a positive integer: torch threads in a
                                                         benchmark worker process
``STYLIZE_FAST_TRAIN_CACHE_MB``    ``train_cache_mb``    unset (1024) or an integer >= 0: training keeps
                                                         its content images decoded in memory when they fit
                                                         in this many MiB (per process); 0: never
``STYLIZE_FAST_LARGE``             ``large``             ``0`` / ``1``: the test suite adds large shapes (for
                                                         a GPU machine)
=================================  ====================  =====================================================

Build-time switches, read by setup.py only (documented here for completeness):
``STYLIZE_FAST_FORCE_CUDA=1`` builds the CUDA kernels or fails loudly; ``STYLIZE_FAST_NO_CUDA=1``
never builds them. ``TRITON_INTERPRET=1`` (Triton's own variable, read live by Triton) runs the
Triton kernels on CPU tensors: :func:`triton_interpreted`.

A bad value raises :class:`ConfigError` naming the variable and the allowed values (at import for
the environment). In code and tests::

    sf.config.get("conv_algo")                      # "auto"
    with sf.config.override(conv_algo="direct", cpu_isa="avx2"):
        ...                                         # C++ kernels see both; restored on exit
    sf.config.options["conv_algo"] = "library"      # process-wide (also monkeypatch.setitem)

``None`` for an option means unset (its automatic default).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass

import torch

from . import _extension

__all__ = ["ConfigError", "OPTIONS", "BUILD_VARIABLES", "get", "values", "override", "options",
           "triton_interpreted", "from_environ"]


class ConfigError(ValueError):
    """A STYLIZE_FAST_* variable or an override has a value outside its allowed set."""


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Option:
    """One option: its environment variable, how a value is checked, whether C++ reads it."""

    name: str
    variable: str
    parse: Callable[[object], object]  # raises ValueError(allowed values) for a bad value
    default: object
    cpp: bool = False                  # pushed to csrc/config.h


def _choice(*allowed: str, none_as: str | None = None,
            fold_case: bool = False) -> Callable[[object], object]:
    def parse(value: object) -> object:
        if value is None or value == "":
            return none_as
        if isinstance(value, str) and fold_case:
            value = value.strip().lower()
        if isinstance(value, str) and value in allowed:
            return value
        raise ValueError(f"must be one of {', '.join(allowed)} (or unset)")
    return parse


def _integer(minimum: int) -> Callable[[object], object]:
    kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(value: object) -> object:
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise ValueError(f"must be {kind} (or unset)")
        try:
            number = int(value.strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or number < minimum or (not isinstance(value, str) and number != value):
            raise ValueError(f"must be {kind} (or unset)")
        return number
    return parse


def _flag(value: object) -> bool:
    if value is None or isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("must be one of 0, 1 (also false/true, no/yes, off/on) or unset")


_BACKENDS = ("auto", "cpu", "cuda", "triton", "reference")
CPU_ISA_LEVELS = ("default", "avx2", "avx512", "avx512_bf16")
CONV_ALGORITHMS = ("auto", "library", "direct", "winograd")

OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("backend", "STYLIZE_FAST_BACKEND", _choice(*_BACKENDS, none_as="auto", fold_case=True), "auto"),
    Option("cpu_isa", "STYLIZE_FAST_CPU_ISA", _choice(*CPU_ISA_LEVELS), None, cpp=True),
    Option("cpu_stream_bytes", "STYLIZE_FAST_CPU_STREAM_BYTES", _integer(0), None, cpp=True),
    Option("conv_algo", "STYLIZE_FAST_CONV_ALGO", _choice(*CONV_ALGORITHMS, none_as="auto"),
           "auto", cpp=True),
    Option("winograd_block", "STYLIZE_FAST_WINOGRAD_BLOCK", _integer(1), None, cpp=True),
    Option("no_malloc_tuning", "STYLIZE_FAST_NO_MALLOC_TUNING", _flag, False),
    Option("no_norm_on_load", "STYLIZE_FAST_NO_NORM_ON_LOAD", _flag, False),
    Option("bench_threads", "STYLIZE_FAST_BENCH_THREADS", _integer(1), None),
    Option("train_cache_mb", "STYLIZE_FAST_TRAIN_CACHE_MB", _integer(0), None),
    Option("large", "STYLIZE_FAST_LARGE", _flag, False),
)}

BUILD_VARIABLES = {
    "STYLIZE_FAST_FORCE_CUDA": "1: build the CUDA kernels or fail loudly (setup.py)",
    "STYLIZE_FAST_NO_CUDA": "1: never build the CUDA kernels (setup.py)",
}


def _check(option: Option, value: object, source: str) -> object:
    try:
        return option.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{source}{option.variable} {exc}, got {value!r}") from None


def from_environ(environ: Mapping[str, str]) -> dict[str, object]:
    """The options' values as ``environ`` sets them; raises ConfigError for a bad one."""
    result = {name: _check(option, environ.get(option.variable), "environment variable ")
              for name, option in OPTIONS.items()}
    if result["cpu_isa"] is None:
        # torch's own cap; its other names (sve256, zvector, ...) do not cap x86 levels.
        aten = environ.get("ATEN_CPU_CAPABILITY", "")
        result["cpu_isa"] = aten if aten in CPU_ISA_LEVELS else None
    return result


def _push(name: str, value: object) -> None:
    """Hand a C++-side option to the extension (csrc/config.cpp); "" means automatic."""
    if OPTIONS[name].cpp and _extension.loaded():
        torch.ops.stylize_fast.set_option(name, "" if value is None else str(value))


_values: dict[str, object] = from_environ(os.environ)


def _set(name: str, value: object, source: str) -> None:
    if name not in OPTIONS:
        raise ConfigError(f"{source}unknown option {name!r}; expected one of {sorted(OPTIONS)}")
    checked = _check(OPTIONS[name], value, source)
    _push(name, checked)
    _values[name] = checked


for _name, _value in _values.items():
    _push(_name, _value)


def get(name: str) -> object:
    """The current value of option ``name`` (see the table above)."""
    try:
        return _values[name]
    except KeyError:
        raise ConfigError(f"unknown option {name!r}; expected one of {sorted(OPTIONS)}") from None


def values() -> dict[str, object]:
    """A copy of every option's current value."""
    return dict(_values)


@contextlib.contextmanager
def override(**changes: object) -> Iterator[None]:
    """Set options inside the ``with`` block (checked like the environment; ``None`` = unset);
    the previous values, in Python and in the C++ extension, come back on exit."""
    previous = {}
    try:
        for name, value in changes.items():
            old = get(name) if name in OPTIONS else None
            _set(name, value, f"stylize_fast.config.override({name}=...): ")
            previous[name] = old
        yield
    finally:
        for name, old in reversed(previous.items()):
            _set(name, old, "")


class _Options(MutableMapping):
    """The options as a mapping: assigning checks the value and pushes it to C++ at once, so
    ``monkeypatch.setitem(sf.config.options, "conv_algo", "direct")`` works in tests."""

    def __getitem__(self, name: str) -> object:
        return get(name)

    def __setitem__(self, name: str, value: object) -> None:
        _set(name, value, f"stylize_fast.config.options[{name!r}]: ")

    def __delitem__(self, name: str) -> None:
        raise TypeError("config options cannot be deleted; assign None to unset one")

    def __iter__(self) -> Iterator[str]:
        return iter(OPTIONS)

    def __len__(self) -> int:
        return len(OPTIONS)

    def __repr__(self) -> str:
        return f"stylize_fast.config.options({_values!r})"


options = _Options()


def triton_interpreted() -> bool:
    """True when Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``). Triton's own
    variable, read live like Triton reads it."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
