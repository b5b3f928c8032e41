"""Synthetic videos for tests, made on the spot (nothing is downloaded).

- :func:`photo`: a natural photo from ``skimage.data`` (or a procedural photo-like texture when
  scikit-image is missing), so that optical flow has real texture to lock on to.
- :func:`camera_pan`: frames of a window moving over that photo (pan, zoom, rotation), so that
  consecutive frames are known warps of each other; :func:`camera_pan_flows` gives the exact
  backward flows between them.
- :func:`write_video`: frames into a video file with PyAV, losslessly when PyAV's FFmpeg can.
- :func:`write_corrupt_video`, :func:`write_audio_only`: files that must be refused.

Sizes are ``(height, width)`` (numpy order) or one int for a square; frames are ``(H, W, 3)``
uint8 RGB. Flow conventions are those of :mod:`stylize_fast.evaluation.flicker`: ``(H, W, 2)``,
``[..., 0]`` = dx, ``[..., 1]`` = dy, and ``warp(frames[t-1], flows[t-1]) ~ frames[t]``.
"""

from __future__ import annotations

import math
import os

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# Encoders tried by write_video(codec=None), best first: (codec, pixel format, options).
# libx264rgb at qp 0 is H.264 on RGB without chroma subsampling: bit-exact, any frame size, in
# .mp4 and .mkv. FFV1 (bgr0) is bit-exact too. MPEG-4 Part 2 at the finest quantiser is lossy
# (4:2:0 colour, even sizes only): the last resort of a minimal FFmpeg build.
LOSSLESS_CODECS = ("libx264rgb", "ffv1")
_ENCODERS = {
    "libx264rgb": ("rgb24", {"qp": "0", "preset": "ultrafast"}),
    "ffv1": ("bgr0", {}),
    "libx264": ("yuv444p", {"qp": "0", "preset": "ultrafast"}),
    "mpeg4": ("yuv420p", {"qscale": "1"}),
}
_AUTO_ORDER = ("libx264rgb", "ffv1", "mpeg4")


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _procedural_photo(h: int = 256, w: int = 256, seed: int = 0) -> np.ndarray:
    """A photo-like RGB texture: smooth colour gradients, a few soft blobs and edges, and fine
    noise of decaying amplitude over several octaves (1/f-like spectrum)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    image = np.zeros((h, w, 3))
    for c in range(3):
        image[..., c] = 0.35 + 0.25 * np.sin(2.1 * xs + 1.3 * c) * np.cos(1.7 * ys - 0.4 * c)
    for _ in range(12):  # soft-edged discs of random colour
        cy, cx, r = rng.random(), rng.random(), 0.05 + 0.15 * rng.random()
        d = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2)
        alpha = 1 / (1 + np.exp((d - r) * 80))[..., None]
        image = image * (1 - alpha) + rng.random(3) * alpha
    for octave in range(1, 6):  # value noise, bilinearly upsampled lattices
        n = 2 ** (octave + 2)
        lattice = rng.standard_normal((n + 1, n + 1, 3))
        gy, gx = ys * n, xs * n
        y0, x0 = np.floor(gy).astype(int), np.floor(gx).astype(int)
        fy, fx = (gy - y0)[..., None], (gx - x0)[..., None]
        y1, x1 = np.minimum(y0 + 1, n), np.minimum(x0 + 1, n)
        noise = ((lattice[y0, x0] * (1 - fx) + lattice[y0, x1] * fx) * (1 - fy)
                 + (lattice[y1, x0] * (1 - fx) + lattice[y1, x1] * fx) * fy)
        image += noise * 0.12 / octave
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def photo(name: str = "astronaut", size: int | tuple[int, int] | None = None) -> np.ndarray:
    """A natural photo ``(H, W, 3)`` uint8 from ``skimage.data`` (``astronaut`` 512x512,
    ``coffee`` 400x600, ``chelsea`` 300x451, ``rocket`` 427x640), resized (area filter, aspect
    ratio not kept) to ``size`` when given. Without scikit-image, a procedural photo-like
    texture (different per name) stands in."""
    if name not in PHOTOS:
        raise ValueError(f"photo: name must be one of {PHOTOS}, got {name!r}")
    try:
        import skimage.data
    except ImportError:
        image = _procedural_photo(seed=PHOTOS.index(name))
    else:
        image = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
    if size is not None:
        from PIL import Image

        h, w = _hw(size)
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BOX))
    return image


def _bilinear(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C) sampled at float coordinates (pixel centres at integers); every
    point must lie inside the image."""
    h, w = image.shape[:2]
    x0 = np.clip(np.floor(xs).astype(int), 0, w - 2)
    y0 = np.clip(np.floor(ys).astype(int), 0, h - 2)
    fx, fy = (xs - x0)[..., None], (ys - y0)[..., None]
    src = image.astype(np.float64)
    top = src[y0, x0] * (1 - fx) + src[y0, x0 + 1] * fx
    bottom = src[y0 + 1, x0] * (1 - fx) + src[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _camera(k: int, size, step, zoom, rotation, start):
    """Frame ``k``'s mapping from frame pixel ``p`` to photo point ``q = centre + A (p - m)``:
    returns ``(centre, A, m)``."""
    h, w = _hw(size)
    m = np.array([(w - 1) / 2, (h - 1) / 2])
    centre = np.asarray(start, dtype=np.float64) + k * np.asarray(step, dtype=np.float64)
    scale = (1.0 + zoom) ** -k  # zoom > 0: the window shrinks, the content grows
    angle = math.radians(rotation * k)
    c, s = math.cos(angle), math.sin(angle)
    return centre, scale * np.array([[c, -s], [s, c]]), m


def _start(image: np.ndarray, frames: int, size, step, start) -> np.ndarray:
    if start is not None:
        return np.asarray(start, dtype=np.float64)
    # Centre the whole path of window centres on the photo, with the first window on whole
    # pixels (so that integer steps copy pixels).
    ih, iw = image.shape[:2]
    h, w = _hw(size)
    m = np.array([(w - 1) / 2, (h - 1) / 2])
    travel = (frames - 1) * np.asarray(step, dtype=np.float64)
    centre = np.array([(iw - 1) / 2, (ih - 1) / 2]) - travel / 2
    return np.rint(centre - m) + m


def camera_pan(image: np.ndarray, frames: int, size: int | tuple[int, int],
               step: tuple[float, float] = (1.0, 0.0), zoom: float = 0.0,
               rotation: float = 0.0, start: tuple[float, float] | None = None) -> list[np.ndarray]:
    """Frames of a camera window moving over ``image``: consecutive frames are exact warps of
    each other (up to the uint8 rounding of sub-pixel samples).

    Args:
        image: ``(H, W, 3)`` photo (e.g. :func:`photo`).
        frames: number of frames.
        size: frame size, ``(height, width)`` or an int.
        step: ``(dx, dy)`` pixels the window centre moves per frame in photo coordinates (the
            content moves the other way). Integer steps without zoom / rotation copy pixels
            exactly; others resample bilinearly.
        zoom: relative scale change per frame (0.02: content grows 2% per frame).
        rotation: degrees the window turns per frame (counter-clockwise in photo coordinates
            with y pointing down, i.e. the content turns clockwise on screen).
        start: ``(x, y)`` of the first window centre in the photo; default centres the path.

    Raises:
        ValueError: a window reaches outside the photo.
    """
    h, w = _hw(size)
    start = _start(image, frames, size, step, start)
    ih, iw = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for k in range(frames):
        centre, a, m = _camera(k, size, step, zoom, rotation, start)
        px, py = xs - m[0], ys - m[1]
        qx = centre[0] + a[0, 0] * px + a[0, 1] * py
        qy = centre[1] + a[1, 0] * px + a[1, 1] * py
        if qx.min() < 0 or qy.min() < 0 or qx.max() > iw - 1 or qy.max() > ih - 1:
            raise ValueError(f"camera_pan: frame {k} reaches outside the {iw}x{ih} photo; use "
                             f"a smaller size, fewer frames or a smaller step")
        if zoom == 0 and rotation == 0 and np.allclose(centre - m, np.rint(centre - m)):
            ox, oy = np.rint(centre - m).astype(int)
            out.append(np.ascontiguousarray(image[oy:oy + h, ox:ox + w, :3]))
        else:
            sampled = _bilinear(image[..., :3], qx, qy)
            out.append(np.clip(np.rint(sampled), 0, 255).astype(np.uint8))
    return out


def camera_pan_flows(image_shape: tuple[int, ...], frames: int, size: int | tuple[int, int],
                     step: tuple[float, float] = (1.0, 0.0), zoom: float = 0.0,
                     rotation: float = 0.0,
                     start: tuple[float, float] | None = None) -> list[np.ndarray]:
    """The exact backward flows of :func:`camera_pan` with the same arguments (``image_shape``
    is the photo's shape): ``flows[t - 1]`` is ``(H, W, 2)`` float32 on frame ``t``'s grid,
    pointing into frame ``t - 1``, so ``warp(frames[t - 1], flows[t - 1]) ~ frames[t]``. A pure
    pan by ``(dx, dy)`` has the constant flow ``(dx, dy)``."""
    h, w = _hw(size)
    dummy = np.empty(image_shape[:2] + (1,))
    start = _start(dummy, frames, size, step, start)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    p = np.stack([xs, ys], -1)
    flows = []
    for k in range(1, frames):
        centre, a, m = _camera(k, size, step, zoom, rotation, start)
        prev_centre, prev_a, _ = _camera(k - 1, size, step, zoom, rotation, start)
        q = centre + (p - m) @ a.T  # photo points of frame k's pixels
        p_prev = m + (q - prev_centre) @ np.linalg.inv(prev_a).T
        flows.append((p_prev - p).astype(np.float32))
    return flows


def available_codecs() -> set[str]:
    import av

    return set(av.codecs_available)


def pick_codec(lossless: bool = True) -> str:
    """The encoder :func:`write_video` uses by default: ``libx264rgb`` (qp 0), else ``ffv1``,
    else (not lossless; or raising when ``lossless``) ``mpeg4``."""
    codecs = available_codecs()
    for codec in _AUTO_ORDER:
        if codec in codecs and (codec in LOSSLESS_CODECS or not lossless):
            return codec
    raise RuntimeError(f"no {'lossless ' if lossless else ''}video encoder in PyAV's FFmpeg "
                       f"(tried {', '.join(_AUTO_ORDER)})")


def write_video(path: str | os.PathLike, frames: list[np.ndarray], fps: int = 10,
                codec: str | None = None) -> str:
    """Encode ``frames`` (``(H, W, 3)`` uint8 RGB, one size) into ``path`` with PyAV; returns
    the codec used.

    ``codec=None`` picks ``libx264rgb`` at qp 0 (bit-exact RGB H.264; works in .mp4 and .mkv,
    any frame size), else ``ffv1`` (bit-exact; use .mkv / .avi), else ``mpeg4`` at the finest
    quantiser (lossy 4:2:0, even sizes). ``codec`` may name one of ``libx264rgb``, ``ffv1``,
    ``libx264`` (qp 0 in 4:4:4: near-lossless, the YUV conversion rounds) or ``mpeg4``.
    :data:`LOSSLESS_CODECS` lists the bit-exact ones.
    """
    import av

    if not frames:
        raise ValueError("write_video: no frames")
    codec = codec or pick_codec(lossless=False)
    if codec not in _ENCODERS:
        raise ValueError(f"write_video: codec must be one of {sorted(_ENCODERS)}, got {codec!r}")
    pix_fmt, options = _ENCODERS[codec]
    h, w = frames[0].shape[:2]
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = h, w
        stream.pix_fmt = pix_fmt
        stream.options = dict(options)
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return codec


def read_video(path: str | os.PathLike) -> list[np.ndarray]:
    """Every frame of ``path``'s first video stream as ``(H, W, 3)`` uint8 RGB."""
    import av

    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)]


def write_corrupt_video(path: str | os.PathLike, keep: float = 0.5) -> None:
    """A truncated MP4: a real 6-frame video cut to ``keep`` of its bytes. The index (``moov``
    box) is written at the end of an MP4, so the cut file cannot be opened at all."""
    if not os.fspath(path).lower().endswith((".mp4", ".mov", ".m4v")):
        raise ValueError("write_corrupt_video: use an .mp4 / .mov path (truncated MKVs still "
                         "open and decode their first frames)")
    frames = camera_pan(photo(size=(96, 96)), 6, (32, 32), step=(2, 1))
    write_video(path, frames)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:max(1, int(len(data) * keep))])


def write_audio_only(path: str | os.PathLike, seconds: float = 0.5,
                     rate: int = 16000) -> str | None:
    """A media file with one audio stream (a 440 Hz tone) and no video stream; returns the
    codec used, or None when PyAV here cannot encode audio (skip the test then). Use .mp4,
    .m4a or .mkv."""
    import av

    codecs = available_codecs()
    for codec in ("aac", "mp2", "pcm_s16le"):
        if codec not in codecs:
            continue
        try:
            with av.open(os.fspath(path), mode="w") as container:
                stream = container.add_stream(codec, rate=rate)
                stream.layout = "mono"
                samples = int(seconds * rate)
                t = np.arange(samples) / rate
                tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
                chunk = 1024
                for start in range(0, samples, chunk):
                    frame = av.AudioFrame.from_ndarray(tone[None, start:start + chunk],
                                                       format="s16", layout="mono")
                    frame.sample_rate = rate
                    frame.pts = start
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        except Exception:  # this codec / container pair is not supported here: try the next
            continue
        return codec
    return None
