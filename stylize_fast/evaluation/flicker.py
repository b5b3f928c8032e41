"""Flicker of a stylised video: the warping error of Lai et al. (2018), "Learning Blind Video
Temporal Consistency".

For each pair of consecutive frames ``(t-1, t)``, optical flow is estimated on the *input*
frames with a classical method (OpenCV's DIS, or Farneback; no learned weights). Frame ``t-1``
is warped into frame ``t``'s coordinates by the backward flow, pixels that are occluded (the
forward-backward consistency check of Sundaram et al. 2010 / Ruder et al. 2016) or whose source
lies outside the frame are left out, and the error of frame ``t`` is the mean squared
difference between frame ``t`` and the warped frame ``t-1`` over the remaining pixels and the
three channels, with RGB in [0, 1] (so it lies in [0, 1]; Lai et al.'s evaluation code
averages the same way). The video's warping error is the mean over frames. The same formula on
the input frames (flows and masks unchanged) is the floor a stylisation can reach: what is left
there is flow error, interpolation and noise.

Conventions (all arrays numpy, pixel units, pixel centres at integer coordinates):

- A flow is ``(H, W, 2)`` float32, ``[..., 0]`` the x (column) and ``[..., 1]`` the y (row)
  displacement, defined on the grid of the image it starts from (OpenCV's convention).
- ``estimate_flow(a, b)`` returns ``F`` with ``a[y, x] ~ b[y + F[y, x, 1], x + F[y, x, 0]]``.
- ``warp(image, flow)`` is backward warping: ``out[y, x] = image(y + flow[y, x, 1],
  x + flow[y, x, 0])``, sampled bilinearly. Hence ``warp(b, estimate_flow(a, b)) ~ a``.
- Backward flow of the pair ``(t-1, t)``: ``estimate_flow(frame_t, frame_t-1)``, on frame
  ``t``'s grid; forward flow: ``estimate_flow(frame_t-1, frame_t)``, on frame ``t-1``'s grid.

Needs OpenCV (``pip install opencv-python-headless``); videos need PyAV (``pip install av``).
"""

from __future__ import annotations

import csv
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

FLOW_METHODS = ("dis", "farneback")
# Forward-backward consistency (Sundaram et al. 2010, as used by Ruder et al. 2016): a pixel is
# consistent where |b + f(x + b)|^2 < ALPHA * (|b|^2 + |f(x + b)|^2) + BETA (pixels squared).
CONSISTENCY_ALPHA = 0.01
CONSISTENCY_BETA = 0.5
# Slack (pixels) of the inside-the-frame test, so a flow of -1e-7 at the border still counts.
INSIDE_SLACK = 1e-3


def _require_cv2():
    try:
        import cv2
    except ImportError as exc:
        raise ValueError("the warping error (optical flow) needs OpenCV: "
                         "pip install opencv-python-headless") from exc
    return cv2


def _check_frame(frame: np.ndarray, what: str) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{what}: expected an (H, W, 3) RGB array, got shape {frame.shape}")
    if frame.dtype != np.uint8 and not np.issubdtype(frame.dtype, np.floating):
        raise ValueError(f"{what}: expected uint8 or float RGB, got dtype {frame.dtype}")
    return frame


def _default_range(frame: np.ndarray, value_range: float | None) -> float:
    """Pixel value of full white: 255 for uint8, else ``value_range`` (default 1.0)."""
    if frame.dtype == np.uint8:
        return 255.0
    return 1.0 if value_range is None else float(value_range)


def _gray_u8(frame: np.ndarray, value_range: float | None) -> np.ndarray:
    """The 8-bit luma OpenCV's flow methods take, from an (H, W, 3) RGB frame."""
    cv2 = _require_cv2()
    frame = _check_frame(frame, "estimate_flow")
    if frame.dtype != np.uint8:
        scale = 255.0 / _default_range(frame, value_range)
        frame = np.clip(np.rint(frame * scale), 0, 255).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def estimate_flow(prev_rgb: np.ndarray, next_rgb: np.ndarray, method: str = "dis", *,
                  value_range: float | None = None) -> np.ndarray:
    """Dense optical flow from ``prev_rgb`` to ``next_rgb`` (classical, no learned weights).

    Args:
        prev_rgb, next_rgb: ``(H, W, 3)`` RGB frames, uint8 (0-255) or float (0 to
            ``value_range``, default 1.0). Flow is estimated on their grayscale.
        method: ``"dis"`` (OpenCV DIS, MEDIUM preset) or ``"farneback"``.
        value_range: full white of float frames (e.g. 255.0 for float frames in 0-255).

    Returns:
        ``(H, W, 2)`` float32 flow ``F`` on ``prev_rgb``'s grid, ``F[..., 0]`` = dx (columns),
        ``F[..., 1]`` = dy (rows), in pixels: ``prev[y, x] ~ next[y + F[y, x, 1],
        x + F[y, x, 0]]``, i.e. ``warp(next_rgb, F) ~ prev_rgb``.
    """
    if method not in FLOW_METHODS:
        raise ValueError(f"estimate_flow: method must be one of {FLOW_METHODS}, got {method!r}")
    cv2 = _require_cv2()
    prev_gray, next_gray = _gray_u8(prev_rgb, value_range), _gray_u8(next_rgb, value_range)
    if prev_gray.shape != next_gray.shape:
        raise ValueError(f"estimate_flow: frames differ in size: {prev_gray.shape} and "
                         f"{next_gray.shape}")
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = dis.calc(prev_gray, next_gray, None)
    else:
        # OpenCV's documented defaults (pyramid 0.5, window 15, 5-pixel polynomials, sigma 1.2),
        # with a level more so that motions of ~10-20 pixels are still found.
        flow = cv2.calcOpticalFlowFarneback(prev_gray, next_gray, None, pyr_scale=0.5,
                                            levels=4, winsize=15, iterations=3, poly_n=5,
                                            poly_sigma=1.2, flags=0)
    return np.ascontiguousarray(flow, dtype=np.float32)


def _check_flow(flow: np.ndarray, what: str) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"{what}: flow must be (H, W, 2), got shape {flow.shape}")
    if not np.isfinite(flow).all():
        raise ValueError(f"{what}: flow has non-finite values")
    return flow


def _sample_points(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where ``x + flow(x)`` lands: float64 ``(xs, ys)`` of shape ``(H, W)``."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward-warp ``image`` by ``flow`` with bilinear sampling.

    ``out[y, x] = image(y + flow[y, x, 1], x + flow[y, x, 0])`` with pixel centres at integer
    coordinates (what ``grid_sample(..., align_corners=True)`` does); samples outside the
    image take the nearest border value (the metric masks them out with
    :func:`occlusion_mask`). Integer flows reproduce shifted pixels exactly.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, any real dtype.
        flow: ``(H, W, 2)`` flow on the output grid (dx, dy in pixels).

    Returns:
        float32 array of ``image``'s shape (float64 when ``image`` is float64).
    """
    flow = _check_flow(flow, "warp")
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[:2] != flow.shape[:2]:
        raise ValueError(f"warp: image must be (H, W) or (H, W, C) with the flow's H, W "
                         f"{flow.shape[:2]}, got shape {image.shape}")
    dtype = np.float64 if image.dtype == np.float64 else np.float32
    h, w = flow.shape[:2]
    xs, ys = _sample_points(flow)
    xs, ys = np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)
    x0, y0 = np.floor(xs).astype(np.intp), np.floor(ys).astype(np.intp)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    wx, wy = (xs - x0).astype(dtype), (ys - y0).astype(dtype)
    if image.ndim == 3:
        wx, wy = wx[..., None], wy[..., None]
    src = image.astype(dtype, copy=False)
    top = src[y0, x0] * (1 - wx) + src[y0, x1] * wx
    bottom = src[y1, x0] * (1 - wx) + src[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def occlusion_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels of frame ``t`` that the warping error leaves out: True = occluded or leaving.

    Args:
        forward: flow ``t-1 -> t`` on frame ``t-1``'s grid (``estimate_flow(frame_t-1,
            frame_t)``).
        backward: flow ``t -> t-1`` on frame ``t``'s grid (``estimate_flow(frame_t,
            frame_t-1)``), the one that warps frame ``t-1`` onto frame ``t``.

    Returns:
        ``(H, W)`` bool on frame ``t``'s grid, True where the forward-backward check fails,
        ``|b + f(x + b)|^2 >= 0.01 (|b|^2 + |f(x + b)|^2) + 0.5``, or where ``x + b(x)`` lies
        outside frame ``t-1`` (pixel centres ``[0, W-1] x [0, H-1]``). ``~mask`` are the
        pixels the error is averaged over.
    """
    forward = _check_flow(forward, "occlusion_mask")
    backward = _check_flow(backward, "occlusion_mask")
    if forward.shape != backward.shape:
        raise ValueError(f"occlusion_mask: forward and backward flows differ in shape: "
                         f"{forward.shape} and {backward.shape}")
    b = backward.astype(np.float64)
    f_at = warp(forward.astype(np.float64), backward)  # f(x + b(x))
    roundtrip = ((b + f_at) ** 2).sum(-1)
    magnitude = (b ** 2).sum(-1) + (f_at ** 2).sum(-1)
    inconsistent = roundtrip >= CONSISTENCY_ALPHA * magnitude + CONSISTENCY_BETA
    h, w = backward.shape[:2]
    xs, ys = _sample_points(backward)
    outside = ((xs < -INSIDE_SLACK) | (xs > w - 1 + INSIDE_SLACK)
               | (ys < -INSIDE_SLACK) | (ys > h - 1 + INSIDE_SLACK))
    return inconsistent | outside


@dataclass(frozen=True)
class PairMotion:
    """The motion of one consecutive pair ``(t-1, t)``, estimated on the input frames."""

    backward: np.ndarray  #: (H, W, 2) flow t -> t-1 on frame t's grid
    valid: np.ndarray  #: (H, W) bool, True where the error is averaged (not occluded, inside)

    @property
    def valid_fraction(self) -> float:
        return float(self.valid.mean())


def pair_motion(prev_rgb: np.ndarray, cur_rgb: np.ndarray, method: str = "dis", *,
                value_range: float | None = None) -> PairMotion:
    """Backward flow and valid pixels of frame ``cur`` (``t``) with respect to ``prev``
    (``t-1``): both flows estimated, then :func:`occlusion_mask`."""
    forward = estimate_flow(prev_rgb, cur_rgb, method, value_range=value_range)
    backward = estimate_flow(cur_rgb, prev_rgb, method, value_range=value_range)
    return PairMotion(backward, ~occlusion_mask(forward, backward))


def pair_error(prev_rgb: np.ndarray, cur_rgb: np.ndarray, motion: PairMotion, *,
               value_range: float | None = None) -> float:
    """Warping error of frame ``cur`` (``t``): ``prev`` (``t-1``) warped by
    ``motion.backward``, squared difference with RGB in [0, 1], averaged over
    ``motion.valid`` pixels and the channels. NaN when no pixel is valid."""
    prev = _check_frame(prev_rgb, "pair_error")
    cur = _check_frame(cur_rgb, "pair_error")
    if prev.shape != cur.shape or prev.shape[:2] != motion.valid.shape:
        raise ValueError(f"pair_error: frames {prev.shape}, {cur.shape} and flow "
                         f"{motion.valid.shape} differ in size")
    if (prev.dtype == np.uint8) != (cur.dtype == np.uint8):
        raise ValueError(f"pair_error: frames of different kinds ({prev.dtype}, {cur.dtype}): "
                         f"give both as uint8 or both as float")
    if not motion.valid.any():
        return math.nan
    scale = 1.0 / _default_range(cur, value_range)
    diff = (cur.astype(np.float64) - warp(prev, motion.backward)) * scale
    return float((diff[motion.valid] ** 2).mean())


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


@dataclass
class WarpingReport:
    """Per-frame warping errors of a stylised video and of its input.

    Entry ``i`` of each list belongs to frame ``t = i + 1`` (0-based), compared with frame
    ``t - 1``; errors are mean squared RGB differences with RGB in [0, 1] (NaN for a frame
    without valid pixels, left out of the means).
    """

    warping_errors: list[float] = field(default_factory=list)  #: stylised frames
    input_warping_errors: list[float] = field(default_factory=list)  #: input frames
    valid_fractions: list[float] = field(default_factory=list)  #: share of pixels averaged
    method: str = "dis"  #: flow method
    source: str | None = None  #: video path, if any

    @property
    def frames(self) -> int:
        """Frames evaluated (pairs + 1)."""
        return len(self.warping_errors) + 1

    @property
    def warping_error(self) -> float:
        """Mean per-frame warping error of the stylised video."""
        return _nanmean(self.warping_errors)

    @property
    def input_warping_error(self) -> float:
        """Mean per-frame warping error of the input video (the floor)."""
        return _nanmean(self.input_warping_errors)

    @property
    def valid_fraction(self) -> float:
        return _nanmean(self.valid_fractions)

    def rows(self) -> list[dict]:
        """One dict per frame ``t >= 1``: the CSV's columns."""
        return [{"frame": i + 1, "input_warping_error": e_in, "warping_error": e,
                 "valid_fraction": v}
                for i, (e_in, e, v) in enumerate(zip(self.input_warping_errors,
                                                     self.warping_errors,
                                                     self.valid_fractions))]

    def write_csv(self, path: str | os.PathLike) -> None:
        """Columns ``frame, input_warping_error, warping_error, valid_fraction``; one row per
        frame ``t >= 1`` (``frames - 1`` rows)."""
        _make_parent(path)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, ["frame", "input_warping_error", "warping_error",
                                        "valid_fraction"])
            writer.writeheader()
            writer.writerows(self.rows())

    def plot(self, path: str | os.PathLike) -> None:
        """A PNG of both per-frame error curves (needs matplotlib)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        frames = [r["frame"] for r in self.rows()]
        fig = Figure(figsize=(7, 3.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(frames, self.warping_errors, marker=".",
                label=f"stylised (mean {self.warping_error:.4g})")
        ax.plot(frames, self.input_warping_errors, marker=".",
                label=f"input (mean {self.input_warping_error:.4g})")
        ax.set_xlabel("frame t (compared with t-1)")
        ax.set_ylabel("warping error (MSE, RGB in [0, 1])")
        name = os.path.basename(self.source) if self.source else "frames"
        ax.set_title(f"{name}: flicker, {self.method} flow")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        _make_parent(path)
        fig.savefig(os.fspath(path), format="png")


def _make_parent(path: str | os.PathLike) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


class _ReportBuilder:
    """Adds (input, stylised) frames one at a time; keeps only the previous pair."""

    def __init__(self, method: str, value_range: float | None, source: str | None = None):
        if method not in FLOW_METHODS:
            raise ValueError(f"flow method must be one of {FLOW_METHODS}, got {method!r}")
        _require_cv2()
        self.report = WarpingReport(method=method, source=source)
        self.value_range = value_range
        self.count = 0
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, input_rgb: np.ndarray, stylized_rgb: np.ndarray) -> None:
        input_rgb = _check_frame(input_rgb, f"input frame {self.count}")
        stylized_rgb = _check_frame(stylized_rgb, f"frame {self.count}")
        if input_rgb.shape != stylized_rgb.shape:
            raise ValueError(f"frame {self.count}: the frame {stylized_rgb.shape} and its flow "
                             f"frame {input_rgb.shape} differ in size")
        if self._prev is not None:
            prev_in, prev_sty = self._prev
            if prev_in.shape != input_rgb.shape:
                raise ValueError(f"frame {self.count} is {input_rgb.shape}, frame "
                                 f"{self.count - 1} {prev_in.shape}: frames must share a size")
            vr = self.value_range
            motion = pair_motion(prev_in, input_rgb, self.report.method, value_range=vr)
            self.report.valid_fractions.append(motion.valid_fraction)
            self.report.input_warping_errors.append(
                pair_error(prev_in, input_rgb, motion, value_range=vr))
            self.report.warping_errors.append(
                pair_error(prev_sty, stylized_rgb, motion, value_range=vr))
        self._prev = (input_rgb, stylized_rgb)
        self.count += 1

    def finish(self, what: str) -> WarpingReport:
        if self.count < 2:
            raise ValueError(f"{what}: {self.count} frame(s); the warping error needs at least "
                             f"2 frames")
        return self.report


def warping_report(frames: Iterable[np.ndarray], flow_frames: Iterable[np.ndarray] | None = None,
                   method: str = "dis", *, value_range: float | None = None) -> WarpingReport:
    """Warping errors of ``frames`` and of ``flow_frames`` (the input video), with the flows and
    masks estimated on ``flow_frames`` (default: ``frames`` themselves).

    Args:
        frames: ``(H, W, 3)`` RGB frames (e.g. stylised), uint8 or float (0 to ``value_range``).
        flow_frames: the frames to estimate motion on (e.g. the input video), same sizes and
            count; the report's ``input_warping_errors`` are theirs.
        method: ``"dis"`` or ``"farneback"``.
        value_range: full white of float frames (default 1.0; uint8 frames are always 0-255).
    """
    builder = _ReportBuilder(method, value_range)
    frames = list(frames)
    flow_frames = frames if flow_frames is None else list(flow_frames)
    if len(flow_frames) != len(frames):
        raise ValueError(f"warping_report: {len(frames)} frames but {len(flow_frames)} flow "
                         f"frames")
    for input_rgb, rgb in zip(flow_frames, frames):
        builder.add(input_rgb, rgb)
    return builder.finish("warping_report")


def warping_errors(frames: Sequence[np.ndarray], flow_frames: Sequence[np.ndarray] | None = None,
                   method: str = "dis", *, value_range: float | None = None) -> list[float]:
    """Per-frame warping errors of ``frames`` (``len(frames) - 1`` values; entry ``i`` is frame
    ``i + 1`` against frame ``i``), flows estimated on ``flow_frames`` (default ``frames``).
    Squared differences with RGB in [0, 1]; see :func:`warping_report` for the arguments."""
    return warping_report(frames, flow_frames, method, value_range=value_range).warping_errors


# -- videos ------------------------------------------------------------------------------------


def _open_video(path: str):
    """``(container, stream)`` of ``path``'s first video stream, with clear errors."""
    from ..inference.video import _require_av

    av = _require_av()
    if not os.path.exists(path):
        raise FileNotFoundError(f"video not found: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, not a video file")
    try:
        container = av.open(path)
    except Exception as exc:  # PyAV raises its own error hierarchy (subclasses of OSError/...)
        raise ValueError(f"{path}: cannot open video: not a video, or a corrupt or truncated "
                         f"file ({exc})") from exc
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise ValueError(f"{path}: no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _decode(container, stream, path: str, max_frames: int | None) -> Iterator[np.ndarray]:
    """RGB uint8 frames of ``stream``; a decoding failure becomes a ValueError naming the
    frame."""
    from av.error import FFmpegError

    count = 0
    try:
        for frame in container.decode(stream):
            if max_frames is not None and count >= max_frames:
                return
            yield frame.to_ndarray(format="rgb24")
            count += 1
    except (FFmpegError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot decode frame {count}: corrupt video ({exc})") from exc


def evaluate_video(model_or_stylizer, video_path: str | os.PathLike, *, method: str = "dis",
                   max_frames: int | None = None, progress: bool = False,
                   **stylizer_options) -> WarpingReport:
    """Stylise ``video_path`` and measure the flicker of the result and of the input.

    Frames are decoded with PyAV, stylised ``batch_size`` at a time, and compared pair by pair
    as they come (memory: a batch of frames, not the video).

    Args:
        model_or_stylizer: a :class:`~stylize_fast.inference.Stylizer`, or what ``Stylizer``
            takes as its model (an ``nn.Module`` or a model file).
        video_path: the input video.
        method: optical flow on the input frames, ``"dis"`` or ``"farneback"``.
        max_frames: evaluate only the first ``max_frames`` frames (>= 2).
        progress: a progress bar on standard error.
        **stylizer_options: keyword arguments of ``Stylizer`` (``device``, ``dtype``,
            ``batch_size``, ``style``, ``style_images``, ``style_weights``, ``alpha``, ...) when
            a model is given.

    Returns:
        a :class:`WarpingReport` (``warping_errors`` of the stylised frames,
        ``input_warping_errors`` of the input, ``valid_fractions``).

    Raises:
        FileNotFoundError: the video is missing. ValueError: OpenCV or PyAV missing, not a
        video / corrupt file, no video stream, fewer than 2 frames, bad options.
    """
    from ..inference import Stylizer
    from ..inference.progress import progress_bar

    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                   or max_frames < 2):
        raise ValueError(f"evaluate_video: max_frames must be an int >= 2, got {max_frames!r}")
    path = os.fspath(video_path)
    builder = _ReportBuilder(method, None, source=path)  # checks method and OpenCV first
    container, stream = _open_video(path)
    with container:
        if isinstance(model_or_stylizer, Stylizer):
            if stylizer_options:
                raise ValueError(f"evaluate_video: Stylizer options {sorted(stylizer_options)} "
                                 f"given with a ready Stylizer")
            stylizer = model_or_stylizer
        else:
            stylizer = Stylizer(model_or_stylizer, **stylizer_options)
        total = stream.frames or None
        if total is not None and max_frames is not None:
            total = min(total, max_frames)
        bar = progress_bar(progress, total, "frame")
        inputs: deque[np.ndarray] = deque()

        def feed() -> Iterator[np.ndarray]:
            for rgb in _decode(container, stream, path, max_frames):
                inputs.append(rgb)
                yield rgb

        try:
            for stylized in stylizer.iter_batches(feed()):
                builder.add(inputs.popleft(), stylized)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    return builder.finish(path)
