"""Registers backends whose modules need optional packages (Triton) or later issues' ops."""

from __future__ import annotations

import importlib
import importlib.util
import warnings

# Modules imported when present. Each registers itself with stylize_fast.backends on import.
_OPTIONAL_MODULES = (
    ("stylize_fast.ops.padded_conv", None),
    ("stylize_fast.ops.instance_norm_triton", "triton"),
    ("stylize_fast.ops.padded_conv_triton", "triton"),
)


def import_optional_backends() -> None:
    for module, needs in _OPTIONAL_MODULES:
        if importlib.util.find_spec(module) is None:
            continue
        if needs is not None and importlib.util.find_spec(needs) is None:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken optional backend must not break the package
            warnings.warn(f"stylize_fast: could not load {module}: {exc}", RuntimeWarning,
                          stacklevel=2)
