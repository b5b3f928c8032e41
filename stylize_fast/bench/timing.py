"""The measurement core: warm-up, calibrated samples, providers interleaved, median and spread.

Rules it follows so that ratios between providers are honest on a shared, noisy machine:

* each callable's first call is timed on its own (``first_call_s``: includes torch.compile or
  autotuning) and never mixed with the steady-state samples;
* a sample runs the callable ``number`` times, calibrated so one sample lasts at least
  ``min_sample_s`` (timer resolution and call overhead stay negligible);
* samples are interleaved round-robin across all providers of one case, starting each round at
  a different provider, so a burst of noise from other processes hits all providers alike;
* the summary is the median with the 20th-80th percentile spread, never the mean or minimum;
* on CUDA, samples are timed with CUDA events around the launches; providers rotate through
  several copies of their input (:func:`rotation_count`) so no repeat finds its data in cache.
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
    number: int = 1
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
    """Linear-interpolated quantile (numpy's default); NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


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


def _time_calls(fn: Callable[[], object], number: int, device: str) -> float:
    """Seconds per call of ``number`` back-to-back calls."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / number
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def measure(
    fns: Mapping[str, Callable[[], object]],
    *,
    device: str = "cpu",
    warmup: int = 2,
    repeats: int = 15,
    min_repeats: int = 3,
    min_sample_s: float = 2e-3,
    budget_s: float | None = None,
) -> dict[str, Timing | BaseException]:
    """Time every callable in ``fns`` with interleaved samples.

    Args:
        fns: provider name -> zero-argument callable running one call (inputs prepared).
        device: ``"cpu"`` or ``"cuda[:i]"`` (CUDA events, synchronised per sample).
        warmup: calls after the first before sampling starts.
        repeats: samples per provider (fewer, but at least ``min_repeats``, if the
            estimated time exceeds ``budget_s``).
        min_sample_s: a sample repeats the call until it lasts at least this long.

    Returns:
        name -> :class:`Timing`, or the exception a provider raised (it is then dropped from the
        remaining rounds; the others go on).
    """
    results: dict[str, Timing | BaseException] = {}
    per_call: dict[str, float] = {}
    for name, fn in fns.items():
        try:
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            first = time.perf_counter() - t0
            est = first
            for _ in range(warmup):
                est = _time_calls(fn, 1, device)
            per_call[name] = max(est, 1e-7)
            results[name] = Timing(first_call_s=first)
        except Exception as exc:  # a broken provider must not stop the others
            results[name] = exc
    live = [n for n in fns if isinstance(results[n], Timing)]
    if not live:
        return results
    for name in live:
        results[name].number = max(1, math.ceil(min_sample_s / per_call[name]))
    round_s = sum(results[n].number * per_call[n] for n in live)
    if budget_s is not None and repeats * round_s > budget_s:
        repeats = max(min_repeats, int(budget_s / round_s))
    for r in range(repeats):
        # Rotate the starting provider each round: no provider always runs right after another.
        order = live[r % len(live):] + live[:r % len(live)]
        for name in order:
            timing = results[name]
            if not isinstance(timing, Timing):
                continue
            try:
                timing.samples.append(_time_calls(fns[name], timing.number, device))
            except Exception as exc:
                results[name] = exc
    return results
