"""The one timing method of every benchmark here (``stylize-fast bench``, ``benchmarks/bench_*.py``,
``benchmarks/readme_results.py``): what a user's call costs, providers interleaved.

Rules it follows so that ratios between providers are honest on a shared, noisy machine:

* each callable's first call is timed on its own (``first_call_s``: includes torch.compile or
  autotuning, reported apart) and never mixed with the steady-state samples;
* a sample is **one call**, as a user's script makes it (no back-to-back loop that would keep
  the call's output buffers and inputs hot); ``perf_counter`` resolves well below the
  microsecond, so even the smallest op here is timed per call;
* one round runs each provider once, and each round starts at a different provider, so a burst of
  noise from other processes hits all providers alike and no provider always follows another;
* the summary is the median with the 20th-80th percentile spread (numpy's quantiles), never the
  mean or the minimum;
* on CUDA, samples are timed with CUDA events around the launch; providers rotate through
  several copies of their input (:func:`rotation_count`) so no call finds its data in cache.

The allocator setting a process runs with (:mod:`.allocator`) is chosen before it starts:
``run_bench`` runs its cases once per setting, each in its own process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch


@dataclass
class Timing:
    """Steady-state timing of one callable. Times in seconds per call."""

    samples: list[float] = field(default_factory=list)
    first_call_s: float = float("nan")

    @property
    def median(self) -> float:
        return quantile(self.samples, 0.5)

    @property
    def p20(self) -> float:
        return quantile(self.samples, 0.2)

    @property
    def p80(self) -> float:
        return quantile(self.samples, 0.8)

    @property
    def repeats(self) -> int:
        return len(self.samples)

    @property
    def setup_s(self) -> float:
        """Time the first call took beyond a steady-state call (compilation, autotuning)."""
        return max(0.0, self.first_call_s - self.median)


def quantile(values: list[float], q: float) -> float:
    """numpy's linear-interpolated quantile; NaN for no values."""
    if not values:
        return float("nan")
    import numpy as np

    return float(np.quantile(np.asarray(values, dtype=np.float64), q))


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def rotation_count(bytes_per_input: int, cache_bytes: int, limit: int = 16) -> int:
    """How many copies of an input to cycle through so the inputs together exceed twice the
    cache: a repeat then never starts with its input already cached."""
    if bytes_per_input <= 0:
        return 1
    return max(1, min(limit, math.ceil(2 * cache_bytes / bytes_per_input)))


class Rotating:
    """Cycles through a list of prepared argument tuples; ``next()`` returns the next one."""

    def __init__(self, items: list) -> None:
        if not items:
            raise ValueError("Rotating: needs at least one item")
        self.items = items
        self.i = 0

    def next(self):
        item = self.items[self.i]
        self.i = (self.i + 1) % len(self.items)
        return item


def time_call(fn: Callable[[], object], device: str = "cpu") -> float:
    """Seconds one call of ``fn`` takes (CUDA: between events around it, synchronised)."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(
    fns: Mapping[str, Callable[[], object]],
    *,
    device: str = "cpu",
    warmup: int = 2,
    repeats: int = 15,
    min_repeats: int = 3,
    budget_s: float | None = None,
) -> dict[str, Timing | BaseException]:
    """Time every callable in ``fns``: ``repeats`` rounds, one call of each per round.

    Args:
        fns: provider name -> zero-argument callable running one call (inputs prepared).
        device: ``"cpu"`` or ``"cuda[:i]"`` (CUDA events, synchronised per call).
        warmup: calls after the first before sampling starts.
        repeats: rounds (fewer, but at least ``min_repeats``, if the estimated time exceeds
            ``budget_s``).

    Returns:
        name -> :class:`Timing`, or the exception a provider raised (it is then dropped from the
        remaining rounds; the others go on).
    """
    synchronize(device)
    results: dict[str, Timing | BaseException] = {}
    per_call: dict[str, float] = {}
    for name, fn in fns.items():
        try:
            first = time_call(fn, device)
            est = first
            for _ in range(warmup):
                est = time_call(fn, device)
            per_call[name] = est
            results[name] = Timing(first_call_s=first)
        except Exception as exc:  # a broken provider must not stop the others
            results[name] = exc
    live = [n for n in fns if isinstance(results[n], Timing)]
    if not live:
        return results
    round_s = sum(per_call[n] for n in live)
    if budget_s is not None and repeats * round_s > budget_s:
        repeats = max(min_repeats, int(budget_s / max(round_s, 1e-9)))
    for r in range(repeats):
        # Rotate the starting provider each round: no provider always runs right after another.
        order = live[r % len(live):] + live[:r % len(live)]
        for name in order:
            timing = results[name]
            if not isinstance(timing, Timing):
                continue
            try:
                timing.samples.append(time_call(fns[name], device))
            except Exception as exc:
                results[name] = exc
    return results
