"""Content images for training: a recursive image folder, random crops, and a sampler whose order
is a pure function of (seed, iteration, rank, world size) so that --resume is exact.

Every randomness of the data pipeline (which images, which crop) comes from generators seeded
by (seed, epoch) and (seed, epoch, position), never from worker or global RNG state; a resumed
run, with any number of workers, sees exactly the batches an uninterrupted run would.

A data set whose decoded, resized images fit a budget is decoded once (:class:`DecodedImages`,
one flat uint8 tensor) and every item is then a crop of it: the same pixels as decoding per
item, without the decode.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads nearby seeds far apart


def _mix(*parts: int) -> int:
    h = 0
    for p in parts:
        h = (h * _MIX + int(p) + 1) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h & 0x7FFFFFFFFFFFFFFF


def find_images(root: str | os.PathLike) -> tuple[list[str], int]:
    """Image files under ``root`` (recursive, sorted), and how many files PIL could not open.

    Only the header is read here (cheap); a file that passes but fails to decode later is
    replaced deterministically by the dataset and reported then.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--data: {root!r} is not a directory")
    good, skipped = [], 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            try:
                with Image.open(path) as im:
                    im.size  # noqa: B018  (header parsed)
                good.append(path)
            except (UnidentifiedImageError, OSError, ValueError):
                skipped += 1
    return good, skipped


def load_rgb(path: str | os.PathLike) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image -> ``(3, H, W)`` float32 in [0, 255]."""
    arr = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float()


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``(width, height)`` after :func:`resize_short_side` to ``size``."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    new = resized_size(*image.size, size)
    return image if new == image.size else image.resize(new, Image.BICUBIC)


def load_style(path: str | os.PathLike, size: int | None = None) -> torch.Tensor:
    """The style image as ``(1, 3, H, W)`` float32 in [0, 255], short side resized to ``size``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--style: no such file {os.fspath(path)!r}")
    try:
        image = load_rgb(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"--style: cannot read {os.fspath(path)!r} as an image ({exc})") from exc
    if size:
        image = resize_short_side(image, size)
    return to_tensor(image).unsqueeze(0)


def _crop_origin(width: int, height: int, size: int, crop_seed: int | None) -> tuple[int, int]:
    """``(left, top)`` of the ``size`` crop: drawn from ``crop_seed``, or centred for None."""
    if crop_seed is None:
        return (width - size) // 2, (height - size) // 2
    rng = random.Random(crop_seed)
    return rng.randint(0, width - size), rng.randint(0, height - size)


def _decode_resized(path: str, size: int) -> Image.Image:
    return resize_short_side(load_rgb(path), size)


class DecodedImages:
    """Every image of a data set decoded and resized once, as uint8 RGB rows.

    All pixels live in ONE flat uint8 tensor (plus int64 offsets and shapes): DataLoader workers
    forked after it is built read it without copying (a list of per-image arrays would have its
    pages copied as the workers touch the objects' reference counts). ``bad`` marks files that
    failed to decode; :class:`ContentImages` skips them as it would without the cache.
    """

    def __init__(self, pixels: torch.Tensor, offsets: torch.Tensor, shapes: torch.Tensor,
                 bad: torch.Tensor) -> None:
        self.pixels, self.offsets, self.shapes, self.bad = pixels, offsets, shapes, bad

    @property
    def nbytes(self) -> int:
        return self.pixels.numel()

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as an ``(H, W, 3)`` uint8 view (no copy)."""
        h, w = (int(v) for v in self.shapes[index])
        start = int(self.offsets[index])
        return self.pixels.numpy()[start:start + h * w * 3].reshape(h, w, 3)

    def share_memory_(self) -> DecodedImages:
        """Move the pixels to shared memory, so that workers started by spawn or forkserver
        receive a handle instead of a pickled copy."""
        self.pixels.share_memory_()
        return self

    @staticmethod
    def decoded_bytes(files: Sequence[str], image_size: int, limit: int | None = None) -> int:
        """Bytes the data set takes decoded and resized (from the files' headers only); stops
        reading headers once the sum passes ``limit`` (a large data set is not opened twice)."""
        total = 0
        for path in files:
            w, h = resized_size(*_header_size(path), image_size)
            total += w * h * 3
            if limit is not None and total > limit:
                break
        return total

    @classmethod
    def build(cls, files: Sequence[str], image_size: int, threads: int = 1) -> DecodedImages:
        """Decode and resize every file (in ``threads`` threads: PIL releases the GIL while it
        decodes and resamples). The result does not depend on ``threads``."""
        sizes = [resized_size(*_header_size(path), image_size) for path in files]
        shapes = torch.tensor([(h, w) for w, h in sizes], dtype=torch.int64).reshape(-1, 2)
        counts = shapes[:, 0] * shapes[:, 1] * 3
        offsets = torch.zeros(len(files) + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=offsets[1:])
        pixels = torch.empty(int(offsets[-1]), dtype=torch.uint8)
        flat = pixels.numpy()
        bad = torch.zeros(len(files), dtype=torch.bool)

        def fill(index: int) -> None:
            path = files[index]
            try:
                image = _decode_resized(path, image_size)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                warnings.warn(f"skipping unreadable image {path}: {exc}", RuntimeWarning,
                              stacklevel=2)
                bad[index] = True
                return
            arr = np.asarray(image, dtype=np.uint8)
            if arr.shape != (int(shapes[index, 0]), int(shapes[index, 1]), 3):
                raise RuntimeError(f"{path}: decoded size {arr.shape[1::-1]} differs from its "
                                   f"header's")
            flat[int(offsets[index]):int(offsets[index + 1])] = arr.reshape(-1)

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            list(pool.map(fill, range(len(files))))
        return cls(pixels, offsets, shapes, bad)


def _header_size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


class ContentImages(torch.utils.data.Dataset):
    """Items are ``(index, crop_seed)`` pairs (from :class:`ResumableBatchSampler`); returns a
    ``(3, S, S)`` float32 crop in [0, 255]: short side resized to ``S``, then a crop at a
    position drawn from ``crop_seed`` (``crop_seed=None``: centre crop).

    ``cache``: the data set already decoded at ``S`` (:meth:`DecodedImages.build`); items are
    then crops of it, bitwise the same as without it.
    """

    def __init__(self, files: Sequence[str], image_size: int,
                 cache: DecodedImages | None = None) -> None:
        if not files:
            raise ValueError("no readable images found for --data")
        if image_size < 8:
            raise ValueError(f"--image-size must be at least 8, got {image_size}")
        if cache is not None and cache.shapes.shape[0] != len(files):
            raise ValueError(f"cache holds {cache.shapes.shape[0]} images, not {len(files)}")
        self.files = list(files)
        self.image_size = int(image_size)
        self.cache = cache

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int | None] | int) -> torch.Tensor:
        index, crop_seed = item if isinstance(item, tuple) else (item, None)
        s = self.image_size
        if self.cache is not None:
            pixels = self._cached(index)
            left, top = _crop_origin(pixels.shape[1], pixels.shape[0], s, crop_seed)
            crop = pixels[top:top + s, left:left + s]
            return torch.from_numpy(crop.copy()).permute(2, 0, 1).float()
        image = self._decoded(index)
        left, top = _crop_origin(*image.size, s, crop_seed)
        return to_tensor(image.crop((left, top, left + s, top + s)))

    def _cached(self, index: int) -> np.ndarray:
        # the first decodable file from ``index`` on, as _decoded picks it
        for attempt in range(len(self.files)):
            candidate = (index + attempt) % len(self.files)
            if not self.cache.bad[candidate]:
                return self.cache.image(candidate)
        raise RuntimeError("none of the --data images could be decoded")

    def _decoded(self, index: int) -> Image.Image:
        for attempt in range(len(self.files)):
            path = self.files[(index + attempt) % len(self.files)]
            try:
                return _decode_resized(path, self.image_size)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                warnings.warn(f"skipping unreadable image {path}: {exc}", RuntimeWarning,
                              stacklevel=2)
        raise RuntimeError("none of the --data images could be decoded")


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Yields, for iterations ``start .. stop-1``, this rank's batch of ``(index, crop_seed)``.

    The global sample stream is the concatenation of per-epoch permutations drawn from a
    generator seeded by ``(seed, epoch)``; iteration ``t`` consumes global positions
    ``[t*B*W, (t+1)*B*W)`` and rank ``r`` takes ``[r*B, (r+1)*B)`` of those (a
    DistributedSampler-like disjoint split with ``W`` ranks of batch ``B``).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_items < 1 or batch_size < 1:
            raise ValueError("num_items and batch_size must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.n, self.batch, self.seed = num_items, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world_size
        self._perm_cache: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perm_cache:
            gen = torch.Generator().manual_seed(_mix(self.seed, epoch))
            self._perm_cache = {epoch: torch.randperm(self.n, generator=gen).tolist()}
        return self._perm_cache[epoch]

    def batch_at(self, iteration: int) -> list[tuple[int, int]]:
        first = (iteration * self.world + self.rank) * self.batch
        out = []
        for pos in range(first, first + self.batch):
            epoch, k = divmod(pos, self.n)
            out.append((self._perm(epoch)[k], _mix(self.seed, epoch, k, 1)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for t in range(self.start, self.stop):
            yield self.batch_at(t)


def synthetic_images(folder: str | os.PathLike, count: int, size: int, seed: int,
                     prefix: str = "content") -> list[str]:
    """Write ``count`` structured random RGB images (gradients, discs, stripes) as PNG, for smoke
    runs and the small experiment without a dataset. Returns their paths."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    paths = []
    for i in range(count):
        img = np.zeros((size, size, 3), np.float32)
        base = rng.uniform(40, 200, 3)
        grad = rng.uniform(-80, 80, (2, 3))
        img += base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
        for _ in range(rng.integers(2, 6)):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            mask = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
            img[mask] = rng.uniform(0, 255, 3)
        freq, angle = rng.uniform(3, 12), rng.uniform(0, np.pi)
        stripes = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        img += stripes[..., None] * rng.uniform(5, 30)
        img += rng.normal(0, 6, img.shape)
        path = os.path.join(os.fspath(folder), f"{prefix}_{i:04d}.png")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def synthetic_style(path: str | os.PathLike, size: int, seed: int) -> str:
    """Write a colourful high-frequency pattern (a stand-in 'style' image) as PNG."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.zeros((size, size, 3), np.float32)
    for ch in range(3):
        for _ in range(3):
            f, a, p = rng.uniform(4, 16), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
            img[..., ch] += np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)) + p)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(img.astype(np.uint8)).save(path)
    return os.fspath(path)
