"""Frame streams that are not video files: raw rgb24 frames on a pipe (``--input -`` /
``--output -``) and image sequences (``--input DIR --sequence`` or ``--input frames/%05d.png``).

Raw frames are ``W * H * 3`` bytes each (rgb24, rows top to bottom, no header), one after
another until end of file, as ``ffmpeg -f rawvideo -pix_fmt rgb24`` writes and reads them.

An image sequence is one clip: the image files of a folder in natural name order
(``frame2.png`` before ``frame10.png``), or the files a printf pattern names, numbered
consecutively from the first that exists among 0..4 (as ffmpeg's image2 demuxer does) up to
the first missing number. Every frame must have the first frame's size; alpha is dropped.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from .. import _atomic
from .image_io import IMAGE_EXTENSIONS, ImageReadError, read_image

STDIO = "-"
#: A printf frame-number field: %d, %5d, %05d.
_PATTERN = re.compile(r"%0?\d*d")
_PATTERN_START_RANGE = 5


def parse_size(text: str) -> tuple[int, int]:
    """``"640x360"`` -> ``(640, 360)`` (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise ValueError(f"--size must be WIDTHxHEIGHT with positive integers, e.g. 640x360; "
                         f"got {text!r}")
    return int(match[1]), int(match[2])


def is_pattern(path: str) -> bool:
    """Whether ``path`` is a printf frame pattern (``frames/%05d.png``) rather than a file."""
    return len(_PATTERN.findall(os.path.basename(path))) == 1 and not os.path.exists(path)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def sequence_files(source: str) -> list[str]:
    """The frame files of an image sequence: a folder's images in natural order, or a
    pattern's consecutive files. Raises ValueError when there are none."""
    if is_pattern(source):
        start = next((i for i in range(_PATTERN_START_RANGE)
                      if os.path.isfile(source % i)), None)
        if start is None:
            raise ValueError(f"{source}: no frame file numbered 0..{_PATTERN_START_RANGE - 1} "
                             f"(e.g. {source % 1})")
        files = []
        while os.path.isfile(source % (start + len(files))):
            files.append(source % (start + len(files)))
        return files
    if not os.path.isdir(source):
        raise FileNotFoundError(f"image sequence not found: {source}")
    files = sorted((name for name in os.listdir(source)
                    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
                    and os.path.isfile(os.path.join(source, name))), key=_natural_key)
    if not files:
        raise ValueError(f"{source}: no image files for an image sequence")
    return [os.path.join(source, name) for name in files]


class SequenceReader:
    """Frames of an image sequence as ``(H, W, 3)`` uint8 arrays."""

    def __init__(self, source: str) -> None:
        self.label = source
        self.files = sequence_files(source)
        self.total = len(self.files)
        self.names = [os.path.basename(f) for f in self.files]

    def frames(self) -> Iterator[np.ndarray]:
        size = None
        for index, path in enumerate(self.files):
            try:
                image = read_image(path)
            except ImageReadError as exc:
                raise ValueError(f"{self.label}: frame {index}: {exc}") from exc
            if size is None:
                size = image.size
            elif image.size != size:
                raise ValueError(f"{self.label}: frame {index} ({path}) is "
                                 f"{image.size[1]}x{image.size[0]}, the sequence is "
                                 f"{size[1]}x{size[0]}")
            yield np.clip(np.rint(image.rgb), 0, 255).astype(np.uint8)


class RawReader:
    """rgb24 frames of a known size from a binary stream (standard input), until end of file.
    A partial last frame is an error."""

    def __init__(self, stream: BinaryIO, width: int, height: int,
                 label: str = "standard input") -> None:
        self.stream, self.width, self.height, self.label = stream, width, height, label
        self.total = None
        self.names = None

    def frames(self) -> Iterator[np.ndarray]:
        nbytes = self.width * self.height * 3
        # One buffer for every frame: the pipeline copies each frame before asking for the next.
        buffer = bytearray(nbytes)
        view = memoryview(buffer)
        frame = np.frombuffer(buffer, np.uint8).reshape(self.height, self.width, 3)
        index = 0
        while True:
            got = 0
            while got < nbytes:
                n = self.stream.readinto(view[got:])
                if not n:
                    break
                got += n
            if got == 0:
                return
            if got < nbytes:
                raise ValueError(f"{self.label}: truncated raw input: frame {index} has {got} "
                                 f"of {nbytes} bytes ({self.width}x{self.height} rgb24); "
                                 f"is --size right?")
            yield frame
            index += 1


class RawWriter:
    """rgb24 frames to a binary stream (standard output), flushed after every batch."""

    def __init__(self, stream: BinaryIO, label: str = "standard output") -> None:
        self.stream, self.label = stream, label
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        try:
            self.stream.write(memoryview(np.ascontiguousarray(frames)).cast("B"))
            self.stream.flush()
        except BrokenPipeError as exc:
            raise RuntimeError(f"{self.label} was closed by its reader after "
                               f"{self.frames_written} frames") from exc
        self.frames_written += len(frames)

    def finish(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass


def temporary_name(folder: str, final_name: str, suffix: str = "") -> str:
    """A new hidden name in ``folder`` for a file or folder that becomes ``final_name +
    suffix`` (the suffix, e.g. an extension, is kept): ``stylize_fast._atomic``'s naming."""
    return _atomic.temporary_name(os.path.join(folder, final_name + suffix))


class FrameFolderWriter:
    """Frames as image files into a folder (``out/``) or a pattern (``out/%05d.png``).

    Frames are written into a hidden temporary folder inside the output folder and moved to
    their names only when the whole run succeeded; on failure nothing appears (and a folder
    this writer created is removed again). Names: the pattern numbered from 1, else ``names``
    (the input sequence's file names) with ``ext`` if given, else ``000001.png``, ...
    """

    def __init__(self, dst: str, names: list[str] | None = None, ext: str | None = None) -> None:
        self.pattern = dst if is_pattern(dst) else None
        self.folder = os.path.dirname(dst) if self.pattern else dst
        self.folder = self.folder or "."
        self.names, self.ext = names, (("." + ext.lstrip(".").lower()) if ext else None)
        self.created_folder = not os.path.isdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        self.tmp = temporary_name(self.folder, "frames")
        os.mkdir(self.tmp)
        self.written: list[str] = []

    def _name(self, index: int) -> str:
        if self.pattern:
            return os.path.basename(self.pattern % (index + 1))
        if self.names is not None and index < len(self.names):
            stem, ext = os.path.splitext(self.names[index])
            return stem + (self.ext or ext)
        return f"{index + 1:06d}{self.ext or '.png'}"

    def write(self, frames: np.ndarray) -> None:
        from PIL import Image

        for frame in frames:
            name = self._name(len(self.written))
            Image.fromarray(frame).save(os.path.join(self.tmp, name))
            self.written.append(name)

    def finish(self) -> None:
        pass

    def commit(self) -> None:
        for name in self.written:
            os.replace(os.path.join(self.tmp, name), os.path.join(self.folder, name))
        os.rmdir(self.tmp)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.created_folder:
            try:
                os.rmdir(self.folder)  # only if still empty
            except OSError:
                pass
