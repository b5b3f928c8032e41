"""Turning ``--input`` / ``--output`` arguments into (input file, output file) pairs."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .image_io import IMAGE_EXTENSIONS
from .video import VIDEO_EXTENSIONS


def _kind(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return "video" if ext in VIDEO_EXTENSIONS else "image"


def collect_jobs(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                 output_ext: str | None = None) -> list[tuple[str, str]]:
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
    """
    if not inputs:
        raise ValueError("no --input given")
    output = os.fspath(output)
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
