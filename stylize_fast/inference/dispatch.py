"""Stylising files: images grouped by size and batched, videos frame by frame, unreadable
inputs skipped with a warning; what happened comes back as :class:`RunStats`."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from .image_io import ImageReadError, LoadedImage, image_size, read_image, write_image
from .progress import progress_bar
from .video import FrameStylizer, StreamOptions, is_stream_input, stylize_video


class FileStylizer(FrameStylizer, Protocol):
    """What file runs need of a :class:`~stylize_fast.inference.Stylizer` (engine.py, which
    imports this module)."""

    batch_size: int
    preserve_color: bool

    def tile_for(self, h: int, w: int) -> int: ...

    def stylize_tensor(self, content: torch.Tensor) -> torch.Tensor: ...


@dataclass
class RunStats:
    """What a :meth:`Stylizer.stylize_files` run did."""

    images: int = 0
    frames: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        done = self.images + self.frames
        return done / self.seconds if self.seconds > 0 else 0.0


def stylize_files(stylizer: FileStylizer, jobs: Sequence[tuple[str, str]],
                  stream: StreamOptions | None = None) -> RunStats:
    """Stylise image and video files: ``jobs`` is ``[(input, output), ...]``.

    Images of the same size (after EXIF orientation) are batched ``stylizer.batch_size`` at a
    time; unreadable inputs are skipped with a warning and listed in ``RunStats.failed``.
    Videos and other frame streams (``stream``: raw frames, image sequences, live sources) run
    through the overlapped pipeline of :func:`~stylize_fast.inference.video.stylize_video`."""
    stats = RunStats()
    start = time.perf_counter()
    images = [(s, d) for s, d in jobs if not is_stream_input(s, stream)]
    videos = [(s, d) for s, d in jobs if is_stream_input(s, stream)]
    groups: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for src, dst in images:
        try:
            groups.setdefault(image_size(src), []).append((src, dst))
        except ImageReadError as exc:
            _skip(stats, src, exc)
    bar = progress_bar(stylizer.progress, sum(len(g) for g in groups.values()), "img")
    try:
        for (h, w), group in groups.items():
            per_batch = 1 if stylizer.tile_for(h, w) else stylizer.batch_size
            for i in range(0, len(group), per_batch):
                _run_batch(stylizer, group[i:i + per_batch], stats, bar)
    finally:
        if bar is not None:
            bar.close()
    for src, dst in videos:
        try:
            stats.frames += stylize_video(stylizer, src, dst, stream)
            stats.outputs.append(dst)
        except (ValueError, OSError) as exc:
            _skip(stats, src, exc)
    stats.seconds = time.perf_counter() - start
    if stylizer.progress:
        done = f"{stats.images} images" + (f", {stats.frames} frames" if stats.frames else "")
        print(f"{done} in {stats.seconds:.2f} s ({stats.per_second:.2f} images/s)"
              + (f"; {len(stats.failed)} skipped" if stats.failed else ""), file=sys.stderr)
    return stats


def _run_batch(stylizer: FileStylizer, batch: list[tuple[str, str]], stats: RunStats, bar) -> None:
    loaded: list[tuple[LoadedImage, str]] = []
    for src, dst in batch:
        try:
            loaded.append((read_image(src), dst))
        except ImageReadError as exc:
            _skip(stats, src, exc)
            if bar is not None:
                bar.update(1)
    if not loaded:
        return
    x = torch.stack([torch.from_numpy(im.rgb).permute(2, 0, 1) for im, _ in loaded])
    y = stylizer.stylize_tensor(x).permute(0, 2, 3, 1).cpu().numpy()
    for (im, dst), out in zip(loaded, y):
        _write(im, out, dst, keep_grayscale=stylizer.preserve_color)
        stats.images += 1
        stats.outputs.append(dst)
        if bar is not None:
            bar.update(1)


def _write(loaded: LoadedImage, stylized: np.ndarray, path: str, keep_grayscale: bool) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_image(path, stylized, loaded.alpha, loaded.bit_depth,
                grayscale=loaded.grayscale and keep_grayscale)


def _skip(stats: RunStats, src: str, exc: Exception) -> None:
    stats.failed.append((src, str(exc)))
    warnings.warn(f"skipped {src}: {exc}", RuntimeWarning, stacklevel=3)
