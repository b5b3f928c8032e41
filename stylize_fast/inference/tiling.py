"""Overlapping tiles for images too large to run whole: each tile is stylised on its own and
the overlaps are cross-faded with linear ramps, so no seam shows and memory stays bounded by the
tile size (plus one float32 accumulator of the output)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least
    ``overlap`` shared pixels between neighbours; the last tile ends at ``length``."""
    if tile >= length:
        return [0]
    step = tile - overlap
    if step <= 0:
        raise ValueError(f"tile ({tile}) must be larger than overlap ({overlap})")
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _ramp(size: int, ramp_before: int, ramp_after: int, dtype, device) -> torch.Tensor:
    """1-D blending weights of a tile sharing ``ramp_before`` / ``ramp_after`` pixels with its
    neighbours: 0 on the outer quarter of each shared band (where the tile's own border padding
    disturbs the result), then rising linearly to 1. Two neighbours' weights sum to 1 across
    their shared band, so the blend is an exact cross-fade."""
    w = torch.ones(size, dtype=dtype, device=device)
    pos = torch.arange(size, dtype=dtype, device=device) + 0.5
    for shared, dist in ((ramp_before, pos), (ramp_after, size - pos)):
        if shared > 0:
            margin = shared // 4
            w = torch.minimum(w, ((dist - margin) / (shared - 2 * margin)).clamp_(min=0))
    return w


def stylize_tiled(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int,
                  overlap: int) -> torch.Tensor:
    """Apply ``fn`` (``(1, C, h, w)`` -> ``(1, C_out, h, w)``) to ``image`` ``(1, C, H, W)`` tile
    by tile; returns ``(1, C_out, H, W)`` float32 on ``image``'s device.

    Neighbouring tiles share ``overlap`` pixels (at least; the last tile of a row/column is
    shifted to end at the border) over which their outputs are cross-faded linearly, ignoring
    the outer quarter of the band where each tile's own border effects are."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"stylize_tiled: image must be (1, C, H, W), got {tuple(image.shape)}")
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(f"stylize_tiled: need tile >= 1 and 0 <= overlap < tile, got "
                         f"tile={tile}, overlap={overlap}")
    _, _, height, width = image.shape
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    out = None
    weight_sum = torch.zeros(height, width, dtype=torch.float32, device=image.device)
    for iy, y0 in enumerate(ys):
        y1 = min(y0 + tile, height)
        # Ramps only where a neighbour overlaps: the actual shared width on each side.
        up = ys[iy - 1] + tile - y0 if iy > 0 else 0
        down = y1 - ys[iy + 1] if iy + 1 < len(ys) else 0
        wy = _ramp(y1 - y0, up, down, torch.float32, image.device)
        for ix, x0 in enumerate(xs):
            x1 = min(x0 + tile, width)
            left = xs[ix - 1] + tile - x0 if ix > 0 else 0
            right = x1 - xs[ix + 1] if ix + 1 < len(xs) else 0
            wx = _ramp(x1 - x0, left, right, torch.float32, image.device)
            pred = fn(image[:, :, y0:y1, x0:x1]).float()
            if out is None:
                out = torch.zeros(1, pred.shape[1], height, width, dtype=torch.float32,
                                  device=image.device)
            w = wy[:, None] * wx[None, :]
            out[:, :, y0:y1, x0:x1].add_(pred * w)
            weight_sum[y0:y1, x0:x1].add_(w)
    return out.div_(weight_sum)
