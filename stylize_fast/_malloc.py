"""glibc malloc settings shared by the inference engine and the benchmarks.

glibc serves blocks of >= M_MMAP_THRESHOLD (dynamic, up to 32 MB on 64-bit) with mmap and
returns them to the OS on free, so every fresh large activation is page-faulted back in. Turning
mmap allocation off and raising the trim threshold keeps freed memory in the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has mallopt with these options), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # only glibc has it (musl etc. do not)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory(trim_threshold: int) -> bool:
    """mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, trim_threshold) (-1: never trim).
    Cannot be undone reliably. Returns whether both took effect (False if not glibc)."""
    libc = glibc()
    if libc is None:
        return False
    return libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
