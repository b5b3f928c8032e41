"""Compile a Triton kernel ahead of time for a GPU architecture, without a GPU, and read its
resource usage (registers, stack, spill / local and shared bytes) from the cubin.

Triton's NVIDIA backend compiles for any ``GPUTarget("cuda", capability, 32)`` with its bundled
ptxas; its bundled ``cuobjdump -res-usage`` reports what each kernel uses. Used by the ops'
``compile_report`` functions (instance_norm_triton, padded_conv_triton) and their tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping

from .. import backends

_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def cuobjdump_path() -> str:
    """The cuobjdump bundled with Triton's NVIDIA backend (may not exist on every install)."""
    import triton.backends.nvidia as nvidia

    return os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")


def parse_resource_usage(text: str) -> dict[str, int]:
    """``cuobjdump -res-usage`` output of a one-kernel cubin -> registers, stack, shared, local
    (local = spill) bytes."""
    found = _USAGE.search(text)
    if found is None:
        raise ValueError(f"no resource usage line (REG:.. STACK:.. SHARED:.. LOCAL:..) in {text!r}")
    return dict(registers=int(found[1]), stack=int(found[2]), shared=int(found[3]),
                local=int(found[4]))


def signature(kernel, constexprs: Mapping[str, object], pointer_type: Callable[[str], str],
              scalar_type: Callable[[str], str] = lambda name: "i32") -> dict[str, str]:
    """Triton signature of ``kernel``: constexprs as such, ``*_ptr`` arguments typed by
    ``pointer_type(name)`` (e.g. ``"fp32"``), every other argument by ``scalar_type(name)``."""
    out = {}
    for name in kernel.arg_names:
        if name in constexprs:
            out[name] = "constexpr"
        elif name.endswith("_ptr"):
            out[name] = "*" + pointer_type(name)
        else:
            out[name] = scalar_type(name)
    return out


def require_compiled(caller: str) -> None:
    """Interpreted kernels (TRITON_INTERPRET=1) cannot be compiled: fail with a clear message."""
    if backends.triton_interpreted():
        raise RuntimeError(f"{caller}: the kernels were created under TRITON_INTERPRET=1; run it "
                           "in a process without it")


def kernel_resources(kernel, sig: Mapping[str, str], constexprs: Mapping[str, object],
                     capability: int, num_warps: int) -> dict[str, int]:
    """Compile ``kernel`` for ``sm_<capability>`` and return :func:`parse_resource_usage`'s
    dict."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    compiled = triton.compile(ASTSource(kernel, dict(sig), constexprs=dict(constexprs)),
                              target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": num_warps})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([cuobjdump_path(), "-res-usage", f.name], check=True,
                               capture_output=True, text=True).stdout
    return parse_resource_usage(usage)


def format_table(rows: list[dict], keys: tuple[str, ...]) -> str:
    """Markdown table of report rows: the ``keys`` columns, then registers / spill (local) /
    stack / shared bytes."""
    columns = (*keys, "registers", "local", "stack", "shared")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
