"""Videos and other frame streams through the Stylizer, decoded and encoded with PyAV
(``pip install av``), overlapped by :mod:`.stream`.

Inputs (:func:`open_source`): a video file; a live source PyAV opens with an explicit
``format=`` (``--input /dev/video0 --input-format v4l2``); raw rgb24 frames on standard input
(``-`` with ``size``); an image sequence (a folder with ``sequence=True``, or a printf pattern
such as ``frames/%05d.png``; :mod:`.raw_io`).

Outputs (:func:`open_writer`): a video file, encoded at the source's frame rate (``fps`` for
raw frames and image sequences, default 25) with H.264 when the bundled FFmpeg has libx264, else
MPEG-4 Part 2; raw rgb24 frames on standard output (``-``); or image files in a folder / for a
pattern. A video file's audio is carried over: its packets are copied when the output container
accepts the codec, else transcoded (AAC, or the container's default audio codec).

Files are written under a hidden temporary name in the output folder and renamed to their final
name (``os.replace``) only when every frame was read, stylised and written; on any error the
temporary file is deleted and an existing output is left untouched.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np
import torch

from .progress import progress_bar
from .raw_io import (
    STDIO,
    FrameFolderWriter,
    RawReader,
    RawWriter,
    SequenceReader,
    is_pattern,
    temporary_name,
)
from .stream import DEFAULT_QUEUE_BATCHES, PipelineStats, run_pipeline

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
ENCODER_PRESET = "veryfast"  # libx264 speed preset of video outputs (CRF 18)
DEFAULT_FPS = 25


class FrameStylizer(Protocol):
    """What a video needs of a :class:`~stylize_fast.inference.Stylizer`."""

    progress: bool
    batch_size: int

    def stylize_tensor(self, content: torch.Tensor) -> torch.Tensor: ...


@dataclass
class StreamOptions:
    """How to read inputs that are not plain files (``stylize-fast stylize`` flags).

    Attributes:
        size: ``(width, height)`` of raw frames on standard input (``--size WxH``).
        fps: frame rate of a video made from raw frames or an image sequence (``--fps``).
        input_format: open inputs with this PyAV / FFmpeg format (``--input-format v4l2``).
        sequence: folders given as inputs are image sequences (``--sequence``).
        output_ext: image format of frames written to a folder (``--format``).
    """

    size: tuple[int, int] | None = None
    fps: float | None = None
    input_format: str | None = None
    sequence: bool = False
    output_ext: str | None = None


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


def is_video_path(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def is_stream_input(src: str, options: StreamOptions | None = None) -> bool:
    """Whether ``src`` is read as one stream of frames (not as an image file)."""
    options = options or StreamOptions()
    return (src == STDIO or is_video_path(src) or is_pattern(src) or bool(options.input_format)
            or (options.sequence and os.path.isdir(src)))


# -- reading ------------------------------------------------------------------------------------


class VideoReader:
    """Frames of a video file or a live source (``input_format``) as ``(H, W, 3)`` uint8."""

    def __init__(self, src: str, input_format: str | None = None) -> None:
        av = _require_av()
        self.label, self.input_format = src, input_format
        try:
            self.container = av.open(src, format=input_format)
        except Exception as exc:  # PyAV raises its own error hierarchy (subclasses of OSError/...)
            raise ValueError(f"{src}: cannot open video ({exc})") from exc
        if not self.container.streams.video:
            self.container.close()
            raise ValueError(f"{src}: no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.width = self.stream.codec_context.width
        self.height = self.stream.codec_context.height
        self.rate = self.stream.average_rate or self.stream.guessed_rate or None
        self.total = self.stream.frames or None
        self.names = None
        start = self.stream.start_time
        self.start_s = float(start * self.stream.time_base) if start is not None else 0.0
        # Audio is carried over from files (a live source cannot be opened a second time).
        self.has_audio = bool(self.container.streams.audio) and input_format is None

    def frames(self):
        av = _require_av()
        index = 0
        decoded = self.container.decode(self.stream)
        try:
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    return
                except av.FFmpegError as exc:
                    raise ValueError(f"{self.label}: cannot decode frame {index}: {exc}") \
                        from exc
                yield frame.to_ndarray(format="rgb24")
                index += 1
        finally:
            self.close()

    def close(self) -> None:
        self.container.close()


def open_source(src: str, options: StreamOptions | None = None):
    """The reader of one stream input: ``.frames()`` (a generator of uint8 frames),
    ``.total`` (frames, or None if unknown), ``.names`` (frame file names or None)."""
    options = options or StreamOptions()
    if src == STDIO:
        if options.size is None:
            raise ValueError("--input - (raw rgb24 frames on standard input) needs "
                             "--size WIDTHxHEIGHT")
        return RawReader(sys.stdin.buffer, *options.size)
    if options.input_format or is_video_path(src):
        return VideoReader(src, options.input_format)
    if is_pattern(src) or os.path.isdir(src):
        return SequenceReader(src)
    raise ValueError(f"{src}: not a video file, image sequence or raw stream")


# -- writing ------------------------------------------------------------------------------------


class _AudioCarry:
    """The source's first audio stream, remuxed into ``sink`` next to the video: packets are
    copied if the container accepts the codec, else decoded and re-encoded. Read from a second
    demuxer of the source, in step with the video so the muxer never has to buffer much."""

    def __init__(self, av, src: str, sink, offset_s: float) -> None:
        self.av, self.src, self.sink = av, src, sink
        self.input = av.open(src)
        self.in_stream = self.input.streams.audio[0]
        name = self.in_stream.codec_context.name
        self.copy = name in sink.supported_codecs
        if self.copy:
            self.out = sink.add_stream_from_template(self.in_stream)
        else:
            target = "aac" if "aac" in sink.supported_codecs else sink.default_audio_codec
            ctx = self.in_stream.codec_context
            self.out = sink.add_stream(target, rate=ctx.sample_rate or 48000)
            # Files without a channel order say "1 channels"; encoders want a named layout.
            channels = ctx.layout.nb_channels if ctx.layout else 2
            self.out.layout = {1: "mono", 2: "stereo"}.get(channels, ctx.layout.name)
            self.resampler = None
        self.offset = offset_s
        self.packets = self.input.demux(self.in_stream)
        self.pending = None  # the packet read past the last time asked for
        self.done = False

    def _time(self, packet) -> float:
        ts = packet.pts if packet.pts is not None else packet.dts
        return float(ts * packet.time_base) - self.offset if ts is not None else -1.0

    def _mux(self, packet) -> None:
        if self.copy:
            shift = round(self.offset / packet.time_base) if self.offset else 0
            if packet.pts is not None:
                packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self.out
            self.sink.mux(packet)
            return
        for frame in packet.decode():
            self._encode(frame)

    def _encode(self, frame) -> None:
        if self.resampler is None:
            ctx = self.out.codec_context
            self.resampler = self.av.AudioResampler(format=ctx.format, layout=ctx.layout,
                                                    rate=ctx.sample_rate)
        for resampled in self.resampler.resample(frame):
            resampled.pts = None  # the encoder numbers samples from the start
            self.sink.mux(self.out.encode(resampled))

    def until(self, seconds: float | None) -> None:
        """Mux audio up to ``seconds`` of output time (None: all that is left)."""
        while not self.done:
            if self.pending is None:
                try:
                    self.pending = next(self.packets)
                except StopIteration:
                    self.done = True
                    break
                except self.av.FFmpegError as exc:
                    raise ValueError(f"{self.src}: cannot read audio: {exc}") from exc
                if self.pending.size == 0:  # the demuxer's flush packet
                    self.pending = None
                    continue
            if seconds is not None and self._time(self.pending) > seconds:
                return
            packet, self.pending = self.pending, None
            self._mux(packet)  # priming packets (negative times) included: decoders need them

    def finish(self) -> None:
        self.until(None)
        if not self.copy:
            if self.resampler is not None:
                for resampled in self.resampler.resample(None):
                    resampled.pts = None
                    self.sink.mux(self.out.encode(resampled))
            self.sink.mux(self.out.encode(None))
        self.input.close()

    def close(self) -> None:
        self.input.close()


class VideoWriter:
    """Frames into a video file, atomically: written to a hidden temporary file in the output
    folder, renamed over ``dst`` by :meth:`commit`, deleted by :meth:`abort`."""

    def __init__(self, dst: str, rate, audio_from: str | None = None,
                 audio_offset_s: float = 0.0) -> None:
        self.av = _require_av()
        self.dst, self.rate = dst, Fraction(rate).limit_denominator(1001 * 1000)
        self.audio_from, self.audio_offset_s = audio_from, audio_offset_s
        folder = os.path.dirname(os.path.abspath(dst))
        os.makedirs(folder, exist_ok=True)
        stem, ext = os.path.splitext(os.path.basename(dst))
        self.tmp = temporary_name(folder, stem, ext)  # keeps the extension: the muxer's format
        os.close(os.open(self.tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        self.sink = self.stream = self.audio = None
        self.count = 0

    def _open(self, height: int, width: int) -> None:
        av = self.av
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        # 4:2:0 needs even sides; odd-sized videos keep their size with 4:4:4 (H.264 only).
        even = width % 2 == 0 and height % 2 == 0
        if not even and codec != "libx264":
            raise ValueError(f"{self.dst}: odd frame size {width}x{height} needs libx264 in "
                             f"PyAV")
        self.sink = av.open(self.tmp, mode="w")
        stream = self.sink.add_stream(codec, rate=self.rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if even else "yuv444p"
        if codec == "libx264":
            # veryfast: on a CPU the encoder shares the cores with the model; measured on a
            # 512x512 pan, ~12 ms/frame against ~45 for "medium" (the model: ~120), at the
            # same CRF (a somewhat larger file, the same quality target).
            stream.options = {"crf": "18", "preset": ENCODER_PRESET}
        self.stream = stream
        if self.audio_from is not None:
            self.audio = _AudioCarry(av, self.audio_from, self.sink, self.audio_offset_s)

    def write(self, frames: np.ndarray) -> None:
        if self.sink is None:
            self._open(*frames.shape[1:3])
        for rgb in frames:
            frame = self.av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = self.count  # time base 1 / rate
            for packet in self.stream.encode(frame):
                self.sink.mux(packet)
            self.count += 1
        if self.audio is not None:
            self.audio.until(self.count / self.rate)

    def finish(self) -> None:
        if self.sink is None:
            raise ValueError(f"{self.dst}: no frames to write")
        for packet in self.stream.encode():
            self.sink.mux(packet)
        if self.audio is not None:
            self.audio.finish()
        self.sink.close()

    def commit(self) -> None:
        os.replace(self.tmp, self.dst)

    def abort(self) -> None:
        for closing in (self.audio, self.sink):
            try:
                if closing is not None:
                    closing.close()
            except Exception:  # noqa: BLE001 - already failing; the original error is raised
                pass
        try:
            os.remove(self.tmp)
        except FileNotFoundError:
            pass


def open_writer(dst: str, reader, options: StreamOptions | None = None):
    """The writer for ``dst``: ``-`` (raw rgb24 on standard output), a video file, or image
    files (a folder or a pattern)."""
    options = options or StreamOptions()
    if dst == STDIO:
        return RawWriter(sys.stdout.buffer)
    if is_video_path(dst):
        rate = options.fps or getattr(reader, "rate", None) or DEFAULT_FPS
        audio = reader.label if getattr(reader, "has_audio", False) else None
        return VideoWriter(dst, rate, audio, getattr(reader, "start_s", 0.0))
    return FrameFolderWriter(dst, reader.names, options.output_ext)


# -- the run ------------------------------------------------------------------------------------


def stylize_stream(stylizer: FrameStylizer, src: str, dst: str,
                   options: StreamOptions | None = None, *,
                   queue_batches: int = DEFAULT_QUEUE_BATCHES) -> PipelineStats:
    """Stylise one stream input ``src`` into ``dst`` (see the module docstring), reading,
    stylising and writing concurrently. Returns the run's
    :class:`~stylize_fast.inference.stream.PipelineStats`; raises (leaving no partial output)
    on an unreadable input, a corrupt frame or a failed write."""
    src, dst = os.fspath(src), os.fspath(dst)
    if src != STDIO and dst != STDIO and os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError(f"output {dst} would overwrite its input; choose another --output")
    reader = open_source(src, options)
    try:
        writer = open_writer(dst, reader, options)
    except BaseException:
        getattr(reader, "close", lambda: None)()
        raise
    bar = progress_bar(getattr(stylizer, "progress", False), reader.total, "frame")

    def on_batch(n: int, stats: PipelineStats) -> None:
        # tqdm's rate is the whole pipeline's; the postfix is the model calls' alone.
        bar.set_postfix_str(f"model {stats.model_fps:.1f} frame/s", refresh=False)
        bar.update(n)

    try:
        return run_pipeline(stylizer, reader.frames(), writer, queue_batches=queue_batches,
                            on_batch=on_batch if bar is not None else None)
    finally:
        # The reader closes its input itself, in its thread (or when collected if it never
        # started): closing it from here could pull a container from under a live decode.
        if bar is not None:
            bar.close()


def stylize_video(stylizer: FrameStylizer, src: str | os.PathLike, dst: str | os.PathLike,
                  options: StreamOptions | None = None) -> int:
    """Stylise every frame of ``src`` into ``dst`` (same size and frame rate, audio kept);
    returns the number of frames written."""
    return stylize_stream(stylizer, src, dst, options).frames
