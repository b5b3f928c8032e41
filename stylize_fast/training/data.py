"""Content images for training: a recursive image folder, random crops, and a sampler whose order
is a pure function of (seed, iteration, rank, world size) so that --resume is exact.

Every randomness of the data pipeline (which images, which crop) comes from generators seeded
by (seed, epoch) and (seed, epoch, position), never from worker or global RNG state; a resumed
run, with any number of workers, sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator, Sequence

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


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return image if new == (w, h) else image.resize(new, Image.BICUBIC)


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


class ContentImages(torch.utils.data.Dataset):
    """Items are ``(index, crop_seed)`` pairs (from :class:`ResumableBatchSampler`); returns a
    ``(3, S, S)`` float32 crop in [0, 255]: short side resized to ``S``, then a crop at a
    position drawn from ``crop_seed`` (``crop_seed=None``: centre crop)."""

    def __init__(self, files: Sequence[str], image_size: int) -> None:
        if not files:
            raise ValueError("no readable images found for --data")
        if image_size < 8:
            raise ValueError(f"--image-size must be at least 8, got {image_size}")
        self.files = list(files)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int | None] | int) -> torch.Tensor:
        index, crop_seed = item if isinstance(item, tuple) else (item, None)
        for attempt in range(len(self.files)):
            path = self.files[(index + attempt) % len(self.files)]
            try:
                image = load_rgb(path)
                break
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                warnings.warn(f"skipping unreadable image {path}: {exc}", RuntimeWarning,
                              stacklevel=2)
        else:
            raise RuntimeError("none of the --data images could be decoded")
        image = resize_short_side(image, self.image_size)
        w, h = image.size
        s = self.image_size
        if crop_seed is None:
            left, top = (w - s) // 2, (h - s) // 2
        else:
            rng = random.Random(crop_seed)
            left, top = rng.randint(0, w - s), rng.randint(0, h - s)
        return to_tensor(image.crop((left, top, left + s, top + s)))


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
