"""Atomic file writes: the package's one way to write a file that must never be seen half
written (model files, training checkpoints, stylised images and videos).

The content goes to a temporary file in the destination's folder (same file system, so the
rename is atomic), which is flushed to disk and renamed over the destination only when the
writer finished without an exception; on failure the temporary file is removed and an existing
destination is left as it was. After a crash at any point a reader finds either the old file or
the complete new one, so "the output exists" means "the output is complete".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

TEMP_MARK = ".tmp-"  # in the temporary files' names: ".<name>.tmp-<pid>-<n><ext>"
_counter = 0


def temporary_name(path: str) -> str:
    """A temporary file name beside ``path`` that keeps its extension (image and video writers
    choose the format from it) and is unique within this process."""
    global _counter
    _counter += 1
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}{TEMP_MARK}{os.getpid()}-{_counter}{ext}")


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """``with atomic_path(dst) as tmp: write(tmp)`` -- ``dst`` appears complete or not at all.

    Creates ``dst``'s folder if needed. The temporary file keeps ``dst``'s extension."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
