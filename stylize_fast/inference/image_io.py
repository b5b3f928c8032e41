"""Image reading and writing for inference: EXIF orientation applied, grayscale and palette
images made RGB, alpha kept aside, 16-bit PNG kept at 16 bits.

Pillow reads 16-bit grayscale PNGs exactly but truncates 16-bit RGB(A) ones to 8 bits; those are
read with ``pypng`` when it is installed (else Pillow, with a warning). 16-bit PNGs are written by
a small encoder here (zlib, filter 0), so writing needs nothing beyond numpy.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from .._atomic import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".pnm", ".gif")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageReadError(ValueError):
    """A file that cannot be read as an image."""


@dataclass
class LoadedImage:
    """An image ready for a generator.

    Attributes:
        rgb: ``(H, W, 3)`` float32, 0-255, EXIF orientation applied.
        alpha: ``(H, W)`` float32 in 0-1, or None.
        bit_depth: 8 or 16 (what the file had; outputs are written the same).
        grayscale: the file had no colour channels.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    grayscale: bool

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.rgb.shape[0], self.rgb.shape[1]


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``(H, W, ...)`` array, as
    ``PIL.ImageOps.exif_transpose`` does to an image."""
    swap = (1, 0) + tuple(range(2, array.ndim))
    if orientation == 2:
        array = array[:, ::-1]
    elif orientation == 3:
        array = array[::-1, ::-1]
    elif orientation == 4:
        array = array[::-1]
    elif orientation == 5:
        array = array.transpose(swap)
    elif orientation == 6:
        array = np.rot90(array, -1)
    elif orientation == 7:
        array = array[::-1, ::-1].transpose(swap)
    elif orientation == 8:
        array = np.rot90(array, 1)
    return np.ascontiguousarray(array)


def _png_header(path: str) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, or None for other files."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _read_png16_color(path: str) -> np.ndarray | None:
    """``(H, W, planes)`` uint16 of a 16-bit colour PNG via pypng, or None without pypng."""
    try:
        import png
    except ImportError:
        return None
    width, height, rows, info = png.Reader(filename=path).asDirect()
    planes = info["planes"]
    data = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    return data.reshape(height, width, planes)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` after EXIF orientation, from the header only (cheap)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc})") from exc
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Read an image file; see :class:`LoadedImage`. Raises :class:`ImageReadError` for a file
    that is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)
            im.load()
            array, alpha, bits, gray = _pil_to_arrays(im, path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc})") from exc
    if orientation not in range(1, 9):
        orientation = 1
    rgb = _orient(array, orientation)
    if alpha is not None:
        alpha = _orient(alpha, orientation)
    return LoadedImage(rgb, alpha, bits, gray)


def _pil_to_arrays(im, path: str):
    """(rgb float32 0-255 (H, W, 3), alpha float32 0-1 or None, bit depth, grayscale)."""
    mode = im.mode
    header = _png_header(path)
    if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
        data = _read_png16_color(path)
        if data is not None:
            planes = data.shape[2]
            color = data[..., :planes - (planes in (2, 4))].astype(np.float32) * (255 / 65535)
            if color.shape[2] == 1:
                color = np.repeat(color, 3, axis=2)
            alpha = (data[..., -1].astype(np.float32) / 65535) if planes in (2, 4) else None
            return color, alpha, 16, planes <= 2
        warnings.warn(f"{path}: 16-bit colour PNG read at 8 bits (install pypng to keep 16)",
                      RuntimeWarning, stacklevel=3)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        data = np.asarray(im).astype(np.float32)
        scale = 255 / 65535 if mode.startswith("I;16") or data.max(initial=0) > 255 else 1.0
        gray = np.clip(data * scale, 0, 255)
        return np.repeat(gray[..., None], 3, axis=2), None, 16 if scale != 1.0 else 8, True
    if mode == "F":
        gray = np.clip(np.asarray(im, dtype=np.float32), 0, 255)
        return np.repeat(gray[..., None], 3, axis=2), None, 8, True
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    mode = im.mode
    if mode in ("L", "LA"):
        data = np.asarray(im, dtype=np.float32)
        if mode == "LA":
            return np.repeat(data[..., :1], 3, axis=2), data[..., 1] / 255, 8, True
        return np.repeat(data[..., None], 3, axis=2), None, 8, True
    if mode == "RGBA":
        data = np.asarray(im, dtype=np.float32)
        return data[..., :3].copy(), data[..., 3] / 255, 8, False
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.float32), None, 8, False


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_png16(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``(H, W)`` gray, ``(H, W, 2)`` gray+alpha, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA
    uint16 data as a 16-bit PNG."""
    array = np.asarray(array)
    if array.dtype != np.uint16:
        raise ValueError(f"write_png16: array must be uint16, got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    h, w, planes = array.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}.get(planes)
    if colour_type is None:
        raise ValueError(f"write_png16: expected 1-4 channels, got {planes}")
    rows = array.astype(">u2").reshape(h, w * planes).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter type 0 per row
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(_PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)
                + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def write_image(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None,
                bit_depth: int = 8, grayscale: bool = False) -> None:
    """Write ``rgb`` ``(H, W, 3)`` (float, 0-255; clipped and rounded) with optional ``alpha``
    ``(H, W)`` in 0-1. ``grayscale`` writes the luminance only; ``bit_depth=16`` keeps 16 bits
    for PNG (other formats get 8). Formats without alpha (JPEG, BMP) drop it with a warning.
    The file appears complete or not at all (``stylize_fast._atomic``): an interrupted run never
    leaves a truncated image that a re-run would take for done."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        _write_image(tmp, os.path.splitext(path)[1].lower(), rgb, alpha, bit_depth, grayscale,
                     shown=path)


def _write_image(path: str, ext: str, rgb: np.ndarray, alpha: np.ndarray | None,
                 bit_depth: int, grayscale: bool, shown: str) -> None:
    from PIL import Image

    rgb = np.asarray(rgb, dtype=np.float32)
    if grayscale:
        rgb = (rgb @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    if alpha is not None and ext in (".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".pnm"):
        warnings.warn(f"{shown}: format has no alpha channel; alpha dropped", RuntimeWarning,
                      stacklevel=3)
        alpha = None
    if bit_depth == 16 and ext == ".png":
        channels = [np.clip(rgb, 0, 255) * (65535 / 255)]
        if alpha is not None:
            channels.append(np.clip(alpha, 0, 1)[..., None] * 65535)
        data = np.rint(np.concatenate(channels, axis=2)).astype(np.uint16)
        write_png16(path, data)
        return
    channels = [np.clip(rgb, 0, 255)]
    if alpha is not None:
        channels.append(np.clip(alpha, 0, 1)[..., None] * 255)
    data = np.rint(np.concatenate(channels, axis=2)).astype(np.uint8)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[data.shape[2]]
    if mode == "LA" and ext not in (".png", ".webp", ".tif", ".tiff"):
        data, mode = data[..., 0], "L"
    image = Image.fromarray(data[..., 0] if mode == "L" else data)
    if ext in (".jpg", ".jpeg"):
        image.save(path, quality=95)
    else:
        image.save(path)
