"""Progress bars for file and video runs: tqdm on standard error, or none."""

from __future__ import annotations

import sys


def progress_bar(enabled: bool, total: int | None, unit: str):
    """A tqdm bar counting ``unit``s (``total`` None: unknown), or None when ``enabled`` is
    false or there is nothing to count. Callers ``update(1)`` and ``close()`` it."""
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)
