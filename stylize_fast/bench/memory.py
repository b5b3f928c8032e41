"""Peak memory of one call: the high-water mark of what PyTorch's CPU allocator handed out
during it, beyond the tensors that existed before (inputs, weights)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def peak_bytes(fn: Callable[[], object]) -> int:
    """Replay, in time order, every allocation and free made through PyTorch's CPU allocator
    during ``fn()`` (profiler allocation events, ``profile_memory=True``) and return the highest
    running total. CPU only: CUDA allocations are not in these events."""
    from torch._C._profiler import _EventType

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        fn()
    deltas, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            deltas.append((event.start_time_ns, event.extra_fields.alloc_size))
        stack.extend(event.children)
    current = peak = 0
    for _, size in sorted(deltas):
        current += size
        peak = max(peak, current)
    return peak
