"""The C allocator's page-fault tax, handled and recorded.

glibc serves blocks of >= M_MMAP_THRESHOLD (dynamic, up to 32 MB) with mmap and returns them to
the OS on free; the next allocation of that size is page-faulted back in, one 4 KiB page at a
time. For an image generator that re-allocates every activation on every forward this alone
costs ~40% of a 512x512 CPU forward, so a benchmark that leaves it on measures the kernel
allocator, not the kernels. :func:`pin` disables it for this process (``mallopt``, which cannot
be undone reliably: a run that wants both settings uses one subprocess per setting).
"""

from __future__ import annotations

import os
import platform

from .._malloc import glibc, keep_freed_memory

ENV_SETTINGS = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "-1"}
SETTINGS = ("pinned", "default")

_state = {"setting": None}


def is_glibc() -> bool:
    return glibc() is not None


def env_pinned() -> bool:
    """True when the environment already pins glibc's allocator (MALLOC_MMAP_MAX_=0 and
    MALLOC_TRIM_THRESHOLD_ set)."""
    return os.environ.get("MALLOC_MMAP_MAX_") == "0" and "MALLOC_TRIM_THRESHOLD_" in os.environ


def pin() -> str:
    """Keep freed memory in the process: no mmap for big blocks, never trim the heap. Returns the
    setting now in force (see :func:`setting`)."""
    if not is_glibc():
        _state["setting"] = f"not glibc ({platform.system()}): allocator left as is"
    elif env_pinned():
        _state["setting"] = "pinned (env MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_)"
    else:
        # -1 converts to SIZE_MAX inside glibc: the top of the heap is never given back.
        ok = keep_freed_memory(-1)
        _state["setting"] = ("pinned (mallopt M_MMAP_MAX=0 M_TRIM_THRESHOLD=-1)" if ok
                             else "default (mallopt failed)")
    return _state["setting"]


def setting() -> str:
    """What this process runs with: ``pinned (...)``, ``default glibc malloc`` or a note."""
    if _state["setting"] is not None:
        return _state["setting"]
    if not is_glibc():
        return f"not glibc ({platform.system()})"
    if env_pinned():
        return "pinned (env MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_)"
    return "default glibc malloc"


def apply(name: str) -> str:
    """Apply a named setting (``"pinned"`` or ``"default"``) to this process; returns
    :func:`setting`. ``"default"`` only leaves glibc alone: it cannot undo an earlier pin."""
    if name not in SETTINGS:
        raise ValueError(f"allocator setting must be one of {SETTINGS}, got {name!r}")
    return pin() if name == "pinned" else setting()


def short(description: str | None = None) -> str:
    """The setting's name for tables and the CSV's ``allocator`` column: ``pinned``,
    ``default`` (glibc's own behaviour) or ``other`` (not glibc, or mallopt failed)."""
    text = setting() if description is None else str(description)
    if text.startswith("pinned"):
        return "pinned"
    if text.startswith("default glibc"):
        return "default"
    return "other"


def subprocess_env(name: str) -> dict[str, str]:
    """Environment for a child process that should run with setting ``name``."""
    env = dict(os.environ)
    for key in ENV_SETTINGS:
        env.pop(key, None)
    if name == "pinned":
        env.update(ENV_SETTINGS)
    return env
