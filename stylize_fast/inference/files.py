"""Turning ``--input`` / ``--output`` arguments into (input file, output file) pairs."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .image_io import IMAGE_EXTENSIONS
from .raw_io import STDIO, is_pattern
from .video import VIDEO_EXTENSIONS


def _kind(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return "video" if ext in VIDEO_EXTENSIONS else "image"


def _stream_jobs(inputs: list[str], output: str, sequence: bool,
                 input_format: str | None) -> list[tuple[str, str]] | None:
    """Jobs for frame-stream inputs (``-``, image sequences, live sources), or None when the
    inputs are plain files and folders."""
    streams = [i for i in inputs if i == STDIO or is_pattern(i) or input_format
               or (sequence and os.path.isdir(i))]
    if not streams and output != STDIO:
        return None
    if output == STDIO or STDIO in inputs or input_format:
        if len(inputs) != 1:
            what = "--output -" if output == STDIO else "--input -" if STDIO in inputs \
                else "--input-format"
            raise ValueError(f"{what} takes exactly one input, got {len(inputs)}")
        src = inputs[0]
        if output == STDIO and not (streams or os.path.splitext(src)[1].lower()
                                    in VIDEO_EXTENSIONS):
            raise ValueError(f"--output - (raw rgb24 frames) needs a video, an image "
                             f"sequence (--sequence / a %05d pattern) or --input -; got {src}")
        if src != STDIO and not (is_pattern(src) or input_format or os.path.exists(src)):
            raise FileNotFoundError(f"input not found: {src}")
        return [(src, output)]
    if len(streams) != len(inputs):
        raise ValueError("image sequences cannot be mixed with other inputs in one run")
    if len(inputs) == 1:  # one sequence: a video, a pattern or a folder of frames
        if os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS and not is_pattern(output) \
                and not os.path.isdir(output):
            raise ValueError(f"--output {output}: an image sequence goes to a video file, a "
                             f"frame pattern (out/%05d.png) or a folder")
        return [(inputs[0], output)]
    if _kind(output) == "video":
        raise ValueError(f"--output {output} is a video file name but there are "
                         f"{len(inputs)} image sequences; give a folder for --output")
    jobs, seen = [], {}
    for src in inputs:  # several sequences: one folder of frames each
        name = os.path.basename(os.path.dirname(src) if is_pattern(src)
                                else os.path.normpath(src))
        dst = os.path.join(output, name)
        if dst in seen:
            raise ValueError(f"inputs {seen[dst]} and {src} would both be written to {dst}")
        seen[dst] = src
        jobs.append((src, dst))
    return jobs


def collect_jobs(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                 output_ext: str | None = None, sequence: bool = False,
                 input_format: str | None = None) -> list[tuple[str, str]]:
    """``[(input file, output file), ...]`` for image files, video files and folders (their
    images and videos, not recursive, sorted by name).

    With a single input image (or video), ``output`` is a file if it has an image (video)
    extension and is not an existing folder; otherwise ``output`` is a folder and each result
    keeps its input's name (videos become ``.mp4``; ``output_ext`` such as ``"png"`` changes
    the images' format).

    Raises:
        FileNotFoundError: an input does not exist. ValueError: a file ``output`` for several
        inputs, two inputs with the same name, an output that would overwrite its input, or no
        inputs found.

    Frame streams (one job each, run by :func:`~stylize_fast.inference.video.stylize_stream`):
    ``-`` (raw rgb24 frames on standard input) and ``output`` ``-`` (raw frames on standard
    output) take exactly one input; so does ``input_format`` (a live source such as
    ``/dev/video0``). With ``sequence`` every input folder is an image sequence, as is any
    input with a printf pattern (``frames/%05d.png``); one sequence goes to a video file, a
    pattern or a folder of frames; several to one folder of frames each inside ``output``.
    """
    if not inputs:
        raise ValueError("no --input given")
    output = os.fspath(output)
    stream_jobs = _stream_jobs([os.fspath(i) for i in inputs], output, sequence, input_format)
    if stream_jobs is not None:
        for src, dst in stream_jobs:
            if src != STDIO and os.path.abspath(src) == os.path.abspath(dst):
                raise ValueError(f"output {dst} would overwrite its input; choose another "
                                 f"--output")
        return stream_jobs
    files: list[str] = []
    for item in map(os.fspath, inputs):
        if os.path.isdir(item):
            found = sorted(os.path.join(item, name) for name in os.listdir(item)
                           if os.path.splitext(name)[1].lower()
                           in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
                           and os.path.isfile(os.path.join(item, name)))
            files += found
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"input not found: {item}")
    if not files:
        raise ValueError(f"no image or video files found in {list(map(os.fspath, inputs))}")
    out_ext = os.path.splitext(output)[1].lower()
    single = len(files) == 1 and not any(os.path.isdir(os.fspath(i)) for i in inputs)
    looks_like_file = not os.path.isdir(output) and (
        out_ext in IMAGE_EXTENSIONS or out_ext in VIDEO_EXTENSIONS)
    if looks_like_file:
        if not single:
            raise ValueError(f"--output {output} is a file name but there are {len(files)} "
                             f"inputs (or a folder); give a folder for --output")
        if _kind(files[0]) != _kind(output):
            raise ValueError(f"--output {output}: a {_kind(files[0])} input needs a "
                             f"{_kind(files[0])} output file name")
        jobs = [(files[0], output)]
    else:
        jobs, seen = [], {}
        for src in files:
            stem, ext = os.path.splitext(os.path.basename(src))
            if _kind(src) == "video":
                ext = ".mp4"
            elif output_ext:
                ext = "." + output_ext.lstrip(".").lower()
            dst = os.path.join(output, stem + ext)
            if dst in seen:
                raise ValueError(f"inputs {seen[dst]} and {src} would both be written to {dst}")
            seen[dst] = src
            jobs.append((src, dst))
    for src, dst in jobs:
        if os.path.abspath(src) == os.path.abspath(dst):
            raise ValueError(f"output {dst} would overwrite its input; choose another --output")
    return jobs
