"""scikit-image's bundled photographs as RGB uint8 arrays, for the docs scripts (scikit-image is
a docs / test dependency, not a runtime one: ``pip install scikit-image``)."""

from __future__ import annotations

import numpy as np


def photo(name: str) -> np.ndarray:
    """``skimage.data.<name>()`` as ``(H, W, 3)`` uint8 RGB: grey images replicated to three
    channels, an alpha channel dropped, other dtypes rescaled to 0-255."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = (255 * (image.astype(np.float64) / max(float(image.max()), 1e-12))).astype(np.uint8)
    return image
