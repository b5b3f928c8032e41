"""Video files through the Stylizer, decoded and encoded with PyAV (``pip install av``).

Frames are stylised ``batch_size`` at a time and re-encoded at the source frame rate (H.264 when
the bundled FFmpeg has libx264, else MPEG-4 Part 2). Audio is not carried over.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from typing import Protocol

import numpy as np

from .progress import progress_bar

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


class FrameStylizer(Protocol):
    """What a video needs of a :class:`~stylize_fast.inference.Stylizer`."""

    progress: bool

    def iter_batches(self, frames: Iterable[np.ndarray]) -> Iterable[np.ndarray]: ...


def video_backend_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _require_av():
    try:
        import av
    except ImportError as exc:
        raise ValueError("video input needs PyAV: pip install av") from exc
    return av


def stylize_video(stylizer: FrameStylizer, src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Stylise every frame of ``src`` into ``dst`` (same size and frame rate); returns the
    number of frames written."""
    av = _require_av()
    src, dst = os.fspath(src), os.fspath(dst)
    try:
        source = av.open(src)
    except Exception as exc:  # PyAV raises its own error hierarchy (subclasses of OSError/...)
        raise ValueError(f"{src}: cannot open video ({exc})") from exc
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    with source:
        if not source.streams.video:
            raise ValueError(f"{src}: no video stream")
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        # 4:2:0 needs even sides; odd-sized videos keep their size with 4:4:4 (H.264 only).
        even = width % 2 == 0 and height % 2 == 0
        if not even and codec != "libx264":
            raise ValueError(f"{src}: odd frame size {width}x{height} needs libx264 in PyAV")
        total = stream.frames or None
        bar = progress_bar(stylizer.progress, total, "frame")
        count = 0
        with av.open(dst, mode="w") as sink:
            out = sink.add_stream(codec, rate=rate)
            out.width, out.height = width, height
            out.pix_fmt = "yuv420p" if even else "yuv444p"
            if codec == "libx264":
                out.options = {"crf": "18", "preset": "medium"}
            frames = (f.to_ndarray(format="rgb24") for f in source.decode(stream))
            try:
                for rgb in stylizer.iter_batches(frames):
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    for packet in out.encode(frame):
                        sink.mux(packet)
                    count += 1
                    if bar is not None:
                        bar.update(1)
                for packet in out.encode():
                    sink.mux(packet)
            finally:
                if bar is not None:
                    bar.close()
    return count
