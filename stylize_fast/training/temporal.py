"""Temporal consistency without optical flow at run time: synthetic motion of still images and
an output-level temporal loss (``stylize-fast train --temporal-weight W``).

Method (Wang et al. 2020, "Consistent Video Style Transfer via Compound Regularization"): each
content image ``x`` gets a synthetic "next frame" ``x'`` -- ``x`` moved by a small random camera
motion of KNOWN flow, plus a small brightness change and noise -- so the exact flow and its
validity mask come for free and no flow network runs, neither in training nor at run time.
Loss (ReCoNet, Gao et al. 2018, output-level temporal loss with luminance correction)::

    D   = (g(x') - warp(g(x), flow)) - Y(x' - warp(x, flow))        # Y broadcast to R, G, B
    L_t = mean over samples of [ sum_valid D^2 / (C * #valid) ] / 255^2 * TEMPORAL_SCALE

``g`` the generator, ``Y`` the BT.601 luminance ``0.299 R + 0.587 G + 0.114 B``: the output may
change between frames exactly as much as the input's luminance does (a real lighting change),
and no more. Images are in the generators' units (RGB 0-255); ``L_t`` is the mean squared error
in [0, 1] units times :data:`TEMPORAL_SCALE`, which puts it on the scale of the ``examples``
preset's content and style terms, so that ``--temporal-weight`` between 1 and 100 is the useful
range (see docs/temporal.md for the measured trade-off).

Flow convention (backward flow, in pixels): ``flow`` is ``(N, 2, H, W)``, channel 0 the x
(column) and channel 1 the y (row) displacement. The flow at pixel ``p = (x, y)`` of the NEXT
frame points to where ``p`` came from in the CURRENT frame: ``next(p) = current(p + flow(p))``.
So ``warp(current, flow)`` is the current frame aligned with the next one. Pixel centres are at
integer coordinates ``0 .. W-1`` / ``0 .. H-1`` (``grid_sample`` with ``align_corners=True``).

The mask is 1 where ``p + flow(p)`` lies inside the current frame (all four bilinear neighbours
exist), else 0. The synthetic motions (translation, rotation, zoom and a smooth field whose
gradient stays far below 1) are one-to-one, so nothing is occluded: out-of-frame is the only
invalid case. For real frame pairs, pass a mask that also excludes occlusions.

Every draw is a pure function of (seed, iteration, position of the sample in the global batch):
a resumed run and ``W`` DDP ranks of batch ``B`` draw exactly the motions one process of batch
``W * B`` does (as :func:`stylize_fast.training.styles.draw_style_indices` does for styles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .data import _mix

_MOTION_STREAM = 0x7E39  # separates the motion draws from the data pipeline's and styles' seeds
LUMA = (0.299, 0.587, 0.114)  # BT.601 luminance weights of R, G, B
TEMPORAL_SCALE = 1e5  # L_t = TEMPORAL_SCALE * mean squared error in [0, 1] units
DEFAULT_TEMPORAL_WEIGHT = 30.0  # the recommended --temporal-weight (docs/temporal.md)


@dataclass(frozen=True)
class MotionConfig:
    """Ranges of the synthetic camera motion and photometric change, drawn per sample.

    ``max_shift``: translation in pixels, uniform in ``[-max_shift, max_shift]`` per axis.
    ``max_rotation``: degrees, uniform in ``[-max_rotation, max_rotation]`` about the centre.
    ``max_zoom``: relative scale change, uniform in ``[-max_zoom, max_zoom]``.
    ``local_amplitude``: standard deviation in pixels of a smooth local flow field (a
    ``local_grid`` x ``local_grid`` random field per axis, upsampled bicubically); 0: none.
    ``brightness``: a grey offset added to every channel, uniform in ``[-brightness,
    brightness]`` (0-255 units). ``noise``: standard deviation of i.i.d. Gaussian noise per
    pixel and channel (0-255 units). The next frame is clamped to [0, 255].
    """

    max_shift: float = 4.0
    max_rotation: float = 2.0
    max_zoom: float = 0.04
    local_amplitude: float = 1.0
    local_grid: int = 4
    brightness: float = 8.0
    noise: float = 2.0

    def __post_init__(self) -> None:
        for name in ("max_shift", "max_rotation", "max_zoom", "local_amplitude", "brightness",
                     "noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"MotionConfig.{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.max_zoom < 0.5:
            raise ValueError(f"MotionConfig.max_zoom must be in [0, 0.5), got {self.max_zoom!r}")
        if self.local_grid < 2:
            raise ValueError(f"MotionConfig.local_grid must be >= 2, got {self.local_grid!r}")


@dataclass
class Motion:
    """A synthetic next frame per image, with its exact backward flow and validity mask.

    ``next``: ``(N, C, H, W)`` in the images' dtype, 0-255. ``flow``: ``(N, 2, H, W)`` in pixels
    (x then y), backward (see the module docstring). ``mask``: ``(N, 1, H, W)``, 1.0 valid /
    0.0 out of frame. ``offset``: ``(N,)`` the grey brightness offset added to each sample."""

    next: torch.Tensor
    flow: torch.Tensor
    mask: torch.Tensor
    offset: torch.Tensor


def sample_seeds(seed: int, iteration: int, rank: int, batch: int) -> list[int]:
    """One seed per sample of ``iteration`` on ``rank`` (batch ``batch`` per rank): a function
    of (seed, iteration, global position ``rank * batch + i``) only."""
    return [_mix(seed, iteration, rank * batch + i, _MOTION_STREAM) for i in range(batch)]


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def pixel_grid(height: int, width: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
    """``(1, 2, H, W)``: the x and y pixel coordinates of every pixel."""
    ys = torch.arange(height, dtype=dtype, device=device)
    xs = torch.arange(width, dtype=dtype, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy]).unsqueeze(0)


def warp(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``images`` ``(N, C, H, W)`` sampled at ``p + flow(p)`` (bilinear, border-clamped):
    ``out(p) = images(p + flow(p))``, ``flow`` ``(N, 2, H, W)`` in pixels (x, y).

    With the backward flow of a frame pair, ``warp(current, flow)`` aligns ``current`` with the
    next frame. Differentiable in ``images`` (and in ``flow``). Runs in float32 (float64 for
    float64 input), outside autocast; any memory format."""
    if images.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"warp: images must be (N, C, H, W) and flow (N, 2, H, W), got "
                         f"{tuple(images.shape)} and {tuple(flow.shape)}")
    n, _, h, w = images.shape
    if flow.shape[0] != n or flow.shape[2:] != (h, w):
        raise ValueError(f"warp: flow {tuple(flow.shape)} does not fit images "
                         f"{tuple(images.shape)}")
    dtype = _acc_dtype(images)
    with torch.autocast(images.device.type, enabled=False):
        x = images.to(dtype)
        source = pixel_grid(h, w, dtype, images.device) + flow.to(dtype)
        # pixel coordinates -> [-1, 1] with align_corners=True (pixel 0 -> -1, W-1 -> +1)
        scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=dtype,
                             device=images.device).view(1, 2, 1, 1)
        grid = (source * scale - 1.0).permute(0, 2, 3, 1)
        return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                         align_corners=True)


def valid_mask(flow: torch.Tensor, tolerance: float = 1e-3) -> torch.Tensor:
    """``(N, 1, H, W)`` float: 1 where ``p + flow(p)`` lies inside the frame (within
    ``tolerance`` pixels of its edge), 0 where it falls outside."""
    _, _, h, w = flow.shape
    source = pixel_grid(h, w, flow.dtype, flow.device) + flow
    inside = ((source[:, :1] >= -tolerance) & (source[:, :1] <= w - 1 + tolerance)
              & (source[:, 1:] >= -tolerance) & (source[:, 1:] <= h - 1 + tolerance))
    return inside.to(flow.dtype)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB -> ``(N, 1, H, W)`` BT.601 luminance."""
    if images.shape[1] != 3:
        raise ValueError(f"luminance: images must have 3 (RGB) channels, got {images.shape[1]}")
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def _motion_flow(gen: torch.Generator, height: int, width: int, config: MotionConfig,
                 dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """One sample's backward flow ``(2, H, W)`` (on CPU) and its brightness offset."""
    def uniform(limit: float) -> float:
        return (2.0 * float(torch.rand((), generator=gen, dtype=torch.float64)) - 1.0) * limit

    tx, ty = uniform(config.max_shift), uniform(config.max_shift)
    angle = math.radians(uniform(config.max_rotation))
    zoom = 1.0 + uniform(config.max_zoom)
    offset = uniform(config.brightness)
    local = torch.randn(1, 2, config.local_grid, config.local_grid, generator=gen,
                        dtype=torch.float64) * config.local_amplitude
    # The camera zooms by `zoom`, rotates by `angle` about the centre c and moves by t: the
    # next frame's pixel p shows the current frame's point R(angle) (p - c) / zoom + c - t,
    # then displaced by the smooth local field.
    grid = pixel_grid(height, width, torch.float64)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    dx, dy = grid[0, 0] - cx, grid[0, 1] - cy
    cos, sin = math.cos(angle), math.sin(angle)
    sx = (cos * dx - sin * dy) / zoom + cx - tx
    sy = (sin * dx + cos * dy) / zoom + cy - ty
    flow = torch.stack([sx, sy]) - grid[0]
    if config.local_amplitude > 0:
        flow = flow + nn.functional.interpolate(local, size=(height, width), mode="bicubic",
                                                align_corners=True)[0]
    return flow.to(dtype), offset


def random_motion(images: torch.Tensor, seeds: list[int],
                  config: MotionConfig | None = None) -> Motion:
    """Synthetic next frames of ``images`` ``(N, 3, H, W)`` (RGB 0-255), one per sample, with
    the sample's motion drawn from ``seeds[i]`` (:func:`sample_seeds`).

    ``next = clamp(warp(images, flow) + offset + noise, 0, 255)``: the exact backward ``flow``
    (translation + rotation + zoom about the centre + a smooth local field), a grey brightness
    ``offset`` and Gaussian ``noise`` (see :class:`MotionConfig`). No gradient flows to
    ``images``. Draws come from CPU generators, so the result does not depend on the device;
    ``next`` keeps the images' dtype and memory format."""
    config = config or MotionConfig()
    if images.dim() != 4:
        raise ValueError(f"random_motion: images must be (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if len(seeds) != n:
        raise ValueError(f"random_motion: {len(seeds)} seeds for {n} images")
    dtype = _acc_dtype(images)
    flows, offsets, noises = [], [], []
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s))
        flow, offset = _motion_flow(gen, h, w, config, dtype)
        flows.append(flow)
        offsets.append(offset)
        if config.noise > 0:
            noises.append(torch.randn(c, h, w, generator=gen, dtype=dtype) * config.noise)
    device = images.device
    flow = torch.stack(flows).to(device)
    offset = torch.tensor(offsets, dtype=dtype, device=device)
    with torch.no_grad():
        moved = warp(images.detach(), flow) + offset.view(n, 1, 1, 1)
        if noises:
            moved = moved + torch.stack(noises).to(device)
        moved = moved.clamp_(0.0, 255.0).to(images.dtype)
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        moved = moved.contiguous(memory_format=torch.channels_last)
    return Motion(next=moved, flow=flow, mask=valid_mask(flow), offset=offset)


def temporal_loss(outputs: torch.Tensor, next_outputs: torch.Tensor, inputs: torch.Tensor,
                  next_inputs: torch.Tensor, flow: torch.Tensor,
                  mask: torch.Tensor | None = None, scale: float = TEMPORAL_SCALE
                  ) -> torch.Tensor:
    """ReCoNet's output-level temporal loss with luminance correction, unweighted.

    ``outputs`` / ``next_outputs``: the generator's ``(N, C, H, W)`` results for ``inputs`` /
    ``next_inputs`` ``(N, 3, H, W)`` (all RGB 0-255); ``flow`` ``(N, 2, H, W)`` the backward
    flow from the input frame to the next one; ``mask`` ``(N, 1, H, W)`` (default: in-frame
    pixels, :func:`valid_mask`). Returns the scalar (float32, float64 for float64 inputs)::

        D = (next_outputs - warp(outputs, flow)) - Y(next_inputs - warp(inputs, flow))
        scale * mean_i [ sum_p mask_i(p) sum_c D_i(p, c)^2 / (C * sum_p mask_i(p)) ] / 255^2

    Per-sample means then the batch mean: ranks of equal batch size average to the loss of
    their combined batch. Differentiable in ``outputs`` and ``next_outputs``."""
    if outputs.shape != next_outputs.shape:
        raise ValueError(f"temporal_loss: outputs {tuple(outputs.shape)} and next_outputs "
                         f"{tuple(next_outputs.shape)} differ")
    if inputs.shape != next_inputs.shape or inputs.shape[0] != outputs.shape[0] \
            or inputs.shape[2:] != outputs.shape[2:]:
        raise ValueError(f"temporal_loss: inputs {tuple(inputs.shape)} / next_inputs "
                         f"{tuple(next_inputs.shape)} do not fit outputs {tuple(outputs.shape)}")
    dtype = _acc_dtype(outputs)
    if mask is None:
        mask = valid_mask(flow)
    with torch.autocast(outputs.device.type, enabled=False):
        with torch.no_grad():
            input_change = next_inputs.to(dtype) - warp(inputs.detach(), flow).to(dtype)
            allowed = luminance(input_change)
            mask = mask.to(dtype)
        change = next_outputs.to(dtype) - warp(outputs, flow)
        diff = change - allowed
        channels = outputs.shape[1]
        per_sample = (diff.square() * mask).sum((1, 2, 3)) \
            / (mask.sum((1, 2, 3)) * channels).clamp_min(1.0)
        return per_sample.mean() * (scale / 255.0 ** 2)
