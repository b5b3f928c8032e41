"""The streaming frame pipeline: read -> stylise -> write, the three stages overlapped.

::

    reader thread            calling thread               writer thread
    frames -> batch buffers  --q_in-->  stylize_tensor  --q_out-->  encode / write
       ^                                 |     ^                          |
       +------- free input buffers ------+     +--- free output buffers --+

* **Overlap.** The reader and the writer run in their own threads; the model runs in the
  calling thread. PyAV releases the GIL while it decodes and encodes, torch while it computes,
  so on a CPU the three stages share the cores instead of taking turns.
* **Bounded memory.** Frames travel in batches of ``batch_size`` inside pooled ``uint8``
  buffers: ``q_in`` and ``q_out`` hold at most ``queue_batches`` batches each, and each pool
  allocates at most ``queue_batches + 2`` buffers (one being filled, one being consumed), then
  recycles them. However long the video, the pipeline holds at most
  ``2 * (queue_batches + 2) * batch_size`` frames.
* **Errors.** The first exception of any stage (the reader's names the file and the frame
  index) sets a shared stop event; every blocking put / get polls it, so no stage waits forever
  on a stage that has died. The calling thread joins the others, calls ``writer.abort()`` (which
  removes a partial output) and re-raises that first exception. Only when every stage has ended
  normally is ``writer.commit()`` called (an atomic rename for files).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

#: Batches each queue may hold (per direction); the goal is overlap, not a deep buffer.
DEFAULT_QUEUE_BATCHES = 2
_POLL_S = 0.05
_END = object()


class BatchStylizer(Protocol):
    """What the pipeline needs of a :class:`~stylize_fast.inference.Stylizer`."""

    batch_size: int

    def stylize_tensor(self, content: torch.Tensor) -> torch.Tensor: ...


class FrameWriter(Protocol):
    """The writing end of a pipeline. ``write`` and ``finish`` run in the writer thread;
    ``commit`` / ``abort`` in the calling thread once the other stages have stopped."""

    def write(self, frames: np.ndarray) -> None:
        """``frames``: ``(n, H, W, 3)`` uint8 (a pooled buffer: copy what is kept)."""

    def finish(self) -> None:
        """No more frames: flush encoders, close files (the output is still temporary)."""

    def commit(self) -> None:
        """Every stage succeeded: make the output visible under its final name."""

    def abort(self) -> None:
        """Something failed: release resources, remove any partial output."""


@dataclass
class PipelineStats:
    """What a :func:`run_pipeline` call did; times in seconds."""

    frames: int = 0
    batches: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    queue_batches: int = DEFAULT_QUEUE_BATCHES
    #: The most batches each queue ("in", "out") ever held; never above ``queue_batches``.
    queue_high_water: dict[str, int] = field(default_factory=dict)
    #: Batch buffers allocated per pool ("in", "out"); never above ``queue_batches + 2``.
    buffers: dict[str, int] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        """Frames per second of the whole pipeline."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        """Frames per second of the model calls alone."""
        return self.frames / self.model_seconds if self.model_seconds > 0 else 0.0


class _Stopped(Exception):
    """Another stage failed; this one gives up quietly."""


class _Queue(queue.Queue):
    """A bounded queue that remembers the most items it held and gives up when ``stop`` is
    set instead of blocking forever."""

    def __init__(self, maxsize: int, stop: threading.Event) -> None:
        super().__init__(maxsize)
        self.stop = stop
        self.high_water = 0

    def _put(self, item) -> None:  # called with the queue's lock held
        super()._put(item)
        self.high_water = max(self.high_water, len(self.queue))

    def put_or_stop(self, item) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                self.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                pass

    def get_or_stop(self):
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return self.get(timeout=_POLL_S)
            except queue.Empty:
                pass


class _Pool:
    """At most ``limit`` reusable ``(batch, H, W, 3)`` uint8 buffers; ``take`` waits for one
    to come back once they are all out."""

    def __init__(self, limit: int, stop: threading.Event) -> None:
        self.free = _Queue(limit, stop)
        self.limit = limit
        self.allocated = 0
        self.shape: tuple[int, ...] | None = None

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.shape is not None and shape != self.shape:
            raise ValueError(f"frame size changed mid-stream: {shape[2]}x{shape[1]} after "
                             f"{self.shape[2]}x{self.shape[1]}")
        self.shape = shape
        try:
            return self.free.get_nowait()
        except queue.Empty:
            pass
        if self.allocated < self.limit:
            self.allocated += 1
            return np.empty(shape, np.uint8)
        return self.free.get_or_stop()

    def give(self, buffer: np.ndarray) -> None:
        self.free.put_nowait(buffer)


@dataclass
class _Batch:
    buffer: np.ndarray  # the pooled (batch_size, H, W, 3) buffer
    count: int  # frames in it

    @property
    def frames(self) -> np.ndarray:
        return self.buffer[:self.count]


class _Failures:
    """The first exception of any stage, and the stop event every stage watches."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()

    def add(self, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(exc)
        self.stop.set()

    def thread(self, name: str, body: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                body()
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                self.add(exc)

        t = threading.Thread(target=run, name=f"stylize-{name}", daemon=True)
        t.start()
        return t


def run_pipeline(
    stylizer: BatchStylizer,
    frames: Iterable[np.ndarray],
    writer: FrameWriter,
    *,
    queue_batches: int = DEFAULT_QUEUE_BATCHES,
    on_batch: Callable[[int, PipelineStats], None] | None = None,
) -> PipelineStats:
    """Stylise ``frames`` (``(H, W, 3)`` uint8 arrays of one size) into ``writer``, reading,
    stylising and writing concurrently, ``stylizer.batch_size`` frames per model call.

    ``on_batch(n, stats)`` is called in the writer thread after each batch of ``n`` frames is
    written (progress bars). Returns the run's :class:`PipelineStats`; on any error the writer
    is aborted and the first exception is raised (after every stage has stopped).
    """
    if queue_batches < 1:
        raise ValueError(f"run_pipeline: queue_batches must be >= 1, got {queue_batches}")
    batch_size = int(stylizer.batch_size)
    failures = _Failures()
    stop = failures.stop
    q_in, q_out = _Queue(queue_batches, stop), _Queue(queue_batches, stop)
    pool_in, pool_out = _Pool(queue_batches + 2, stop), _Pool(queue_batches + 2, stop)
    stats = PipelineStats(queue_batches=queue_batches)
    start = time.perf_counter()

    def read() -> None:
        batch: _Batch | None = None
        it: Iterator[np.ndarray] = iter(frames)
        index, first = 0, None
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    frame = next(it)
                except StopIteration:
                    stats.read_seconds += time.perf_counter() - t0
                    break
                stats.read_seconds += time.perf_counter() - t0
                if frame.shape != first:
                    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                        raise ValueError(f"frame {index}: frames must be (H, W, 3) uint8, got "
                                         f"{frame.shape} {frame.dtype}")
                    if first is not None:
                        raise ValueError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]}, "
                                         f"the frames before it {first[1]}x{first[0]}")
                    first = frame.shape
                if batch is None:
                    batch = _Batch(pool_in.take((batch_size, *frame.shape)), 0)
                batch.buffer[batch.count] = frame
                batch.count += 1
                index += 1
                if batch.count == batch_size:
                    q_in.put_or_stop(batch)
                    batch = None
            if batch is not None:
                q_in.put_or_stop(batch)
            q_in.put_or_stop(_END)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator's finally blocks (e.g. closing the container) run here

    def write() -> None:
        while True:
            batch = q_out.get_or_stop()
            if batch is _END:
                break
            t0 = time.perf_counter()
            writer.write(batch.frames)
            stats.write_seconds += time.perf_counter() - t0
            pool_out.give(batch.buffer)
            stats.frames += batch.count
            stats.batches += 1
            if on_batch is not None:
                on_batch(batch.count, stats)
        t0 = time.perf_counter()
        writer.finish()
        stats.write_seconds += time.perf_counter() - t0

    reader = failures.thread("read", read)
    writer_thread = failures.thread("write", write)
    try:
        while True:
            batch = q_in.get_or_stop()
            if batch is _END:
                q_out.put_or_stop(_END)
                break
            x = torch.from_numpy(batch.frames).permute(0, 3, 1, 2)
            out = _Batch(pool_out.take(batch.buffer.shape), batch.count)
            t0 = time.perf_counter()
            with torch.inference_mode():
                y = stylizer.stylize_tensor(x)
                if y.is_floating_point():
                    y = y.round_()  # as the sequential path did: .round().to(uint8)
                # The copy waits for the device, so the model time is honest on CUDA too.
                torch.from_numpy(out.frames).copy_(y.permute(0, 2, 3, 1))
            stats.model_seconds += time.perf_counter() - t0
            pool_in.give(batch.buffer)
            q_out.put_or_stop(out)
    except _Stopped:
        pass
    except BaseException as exc:  # the model, or Ctrl-C: stop the other stages first
        failures.add(exc)
    finally:
        writer_thread.join()
        # A reader blocked in a read (stdin, a camera) cannot be interrupted; it is a daemon.
        reader.join(timeout=5.0 if failures.errors else None)
        stats.seconds = time.perf_counter() - start
        stats.queue_high_water = {"in": q_in.high_water, "out": q_out.high_water}
        stats.buffers = {"in": pool_in.allocated, "out": pool_out.allocated}
    if not failures.errors:
        try:
            writer.commit()
            return stats
        except BaseException as exc:
            failures.add(exc)
    try:
        writer.abort()
    finally:
        raise failures.errors[0]  # the first failure, not a follow-up of the clean-up
