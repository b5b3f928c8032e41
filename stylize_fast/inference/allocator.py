"""Keep glibc malloc from handing large activations back to the OS after every forward.

With glibc's defaults, an allocation of >= M_MMAP_THRESHOLD (dynamic, up to 32 MB on 64-bit) is
served by a fresh ``mmap`` and unmapped on free; every forward then page-faults its large
activations in again, which costs ~40% of a 512x512 CPU forward of JohnsonNet. Turning mmap
allocation off and raising the trim threshold keeps freed memory in the heap for the next frame.

The process keeps the memory it peaked at (until exit); that is the point for a long-running
inference loop. Opt out with ``STYLIZE_FAST_NO_MALLOC_TUNING=1`` or
``Stylizer(tune_allocator=False)``. Only glibc is touched; elsewhere this is a no-op.
"""

from __future__ import annotations

from .. import config
from .._malloc import glibc, keep_freed_memory

# Large enough never to trim during inference; fits in a C int as mallopt requires.
TRIM_THRESHOLD = 2**30

_state = {"tuned": False}


def opted_out() -> bool:
    return bool(config.get("no_malloc_tuning"))  # STYLIZE_FAST_NO_MALLOC_TUNING


def tune_allocator(force: bool = False) -> bool:
    """Set glibc ``M_MMAP_MAX=0`` and a 1 GiB ``M_TRIM_THRESHOLD`` once per process.

    Returns True when the settings are in force (now or from an earlier call); False on a
    non-glibc system or when opted out by ``STYLIZE_FAST_NO_MALLOC_TUNING=1`` (unless
    ``force``)."""
    if _state["tuned"]:
        return True
    if opted_out() and not force:
        return False
    if glibc() is None:
        return False
    ok = keep_freed_memory(TRIM_THRESHOLD)
    _state["tuned"] = ok
    return ok


def is_tuned() -> bool:
    """Whether :func:`tune_allocator` has taken effect in this process."""
    return _state["tuned"]
