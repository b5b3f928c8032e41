"""The iteration loop every trainer shares (generators in ``trainer``, AdaIN decoders in
``adain``): data-wait timing, the progress bar, the divergence check, ``train_log.jsonl``,
sample grids, checkpoints and a stop requested by SIGINT / SIGTERM (agreed by every DDP rank).

A trainer supplies what differs -- moving a batch to the device, and one update returning its
loss terms as floats -- and gets back the iterations done and one history entry per iteration.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from . import distributed as ddp

DATA_WAIT_SMOOTHING = 0.1  # weight of the newest iteration in the progress bar's data fraction
# loss terms on the progress bar, if present
SHOWN_TERMS = ("content", "style", "tv", "temporal", "total")


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current iteration (with a checkpoint)
    instead of dying mid-update."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict = {}

    def __enter__(self) -> StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second signal: give up at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class DataWait:
    """This rank's time waiting for data against whole iterations: per log window (reset by
    :meth:`new_window`) and exponentially smoothed for the progress bar. Local to the rank: no
    collective, so nothing here can make ranks wait on each other."""

    def __init__(self, smoothing: float = DATA_WAIT_SMOOTHING) -> None:
        self.smoothing = smoothing
        self.window_data = self.window_total = 0.0
        self.smooth_data = self.smooth_total = None

    def add(self, data_seconds: float, iteration_seconds: float) -> None:
        iteration_seconds = max(iteration_seconds, data_seconds)
        self.window_data += data_seconds
        self.window_total += iteration_seconds
        if self.smooth_data is None:
            self.smooth_data, self.smooth_total = data_seconds, iteration_seconds
        else:
            a = self.smoothing
            self.smooth_data += a * (data_seconds - self.smooth_data)
            self.smooth_total += a * (iteration_seconds - self.smooth_total)

    @staticmethod
    def _fraction(data: float, total: float) -> float:
        return min(1.0, data / total) if total > 0 else 0.0

    def window_fraction(self) -> float:
        return self._fraction(self.window_data, self.window_total)

    def smoothed_fraction(self) -> float:
        return self._fraction(self.smooth_data or 0.0, self.smooth_total or 0.0)

    def new_window(self) -> None:
        self.window_data = self.window_total = 0.0


@dataclass
class LoopSchedule:
    """When the loop logs, samples and checkpoints. ``stop``: the last iteration of this call
    (``stop_at`` or ``iterations``); ``iterations``: the run's full length (the bar's total and
    the last sample)."""

    start: int
    stop: int
    iterations: int
    log_every: int
    sample_every: int
    checkpoint_every: int
    log_path: str
    progress: bool = True
    description: str = "train"


def say(message: str, info: ddp.DistInfo | None = None) -> None:
    """A progress message on stderr, from the main rank only."""
    if info is None or info.is_main:
        print(message, file=sys.stderr, flush=True)


def _stop_requested(flag: StopFlag, info: ddp.DistInfo, device: torch.device) -> bool:
    requested = flag.requested
    if info.enabled:  # every rank must agree to stop at the same iteration
        agreed = torch.tensor([int(requested)], device=device)
        torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MAX)
        requested = bool(agreed.item())
    return requested


def run_loop(batches: Iterable, schedule: LoopSchedule, *,
             prepare: Callable[[Any], Any],
             update: Callable[[Any, int], tuple[dict[str, float], float]],
             checkpoint: Callable[[int], None],
             sample: Callable[[int], None],
             info: ddp.DistInfo, device: torch.device,
             on_iteration: Callable[[int, dict], None] | None = None,
             ) -> tuple[int, list[dict]]:
    """Run iterations ``schedule.start + 1 .. schedule.stop`` over ``batches``.

    ``prepare(batch)``: the batch on the device (timed as data wait, with the loader's wait).
    ``update(batch, iteration)``: one optimiser update at 0-based ``iteration``; returns the loss
    terms as floats (already averaged over ranks) and the learning rate used.
    ``checkpoint(iteration)`` / ``sample(iteration)``: called on every rank at the schedule's
    points (and ``checkpoint`` on a requested stop); each decides what its rank writes.
    Returns the last completed iteration and the history of this call.
    """
    from tqdm import tqdm

    history: list[dict] = []
    bar = tqdm(total=schedule.iterations, initial=schedule.start, desc=schedule.description,
               dynamic_ncols=True, disable=not (info.is_main and schedule.progress),
               file=sys.stderr)
    iteration = schedule.start
    wait = DataWait()
    tick = time.perf_counter()
    iterator = iter(batches)
    try:
        with StopFlag() as stop_flag:
            while True:
                data_start = time.perf_counter()
                batch = next(iterator, None)
                if batch is None:
                    break
                batch = prepare(batch)
                data_seconds = time.perf_counter() - data_start
                values, lr = update(batch, iteration)
                iteration += 1

                now = time.perf_counter()
                if not all(math.isfinite(v) for v in values.values()):
                    raise RuntimeError(f"training diverged at iteration {iteration}: {values}")
                wait.add(data_seconds, now - tick)
                entry = {"iteration": iteration, **values, "lr": lr, "seconds": now - tick,
                         "data_seconds": data_seconds, "data_fraction": wait.window_fraction()}
                tick = now
                history.append(entry)
                if on_iteration is not None:
                    on_iteration(iteration, entry)
                bar.set_postfix({**{k: f"{values[k]:.3g}" for k in SHOWN_TERMS if k in values},
                                 "data": f"{wait.smoothed_fraction():.0%}"}, refresh=False)
                bar.update(1)
                if iteration % schedule.log_every == 0 or iteration == schedule.stop:
                    if info.is_main:
                        with open(schedule.log_path, "a") as f:
                            f.write(json.dumps(entry) + "\n")
                    wait.new_window()
                if iteration % schedule.sample_every == 0 or iteration == schedule.iterations:
                    sample(iteration)
                requested = _stop_requested(stop_flag, info, device)
                if (iteration % schedule.checkpoint_every == 0 or iteration == schedule.stop
                        or requested):
                    checkpoint(iteration)
                if requested:
                    say(f"stopped at iteration {iteration}; continue with --resume", info)
                    break
    finally:
        bar.close()
        del iterator  # stop the loader's workers (and free their pages) before anything else
    return iteration, history


def wait_summary(history: list[dict], workers: int, cached: bool) -> str | None:
    """One line: the share of step time spent waiting for data over ``history``."""
    if not history:
        return None
    waited = sum(h["data_seconds"] for h in history) / max(sum(h["seconds"] for h in history),
                                                             1e-12)
    return (f"data wait: {min(waited, 1.0):.1%} of the step time ({len(history)} iterations, "
            f"{workers} workers{', decoded cache' if cached else ''})")
