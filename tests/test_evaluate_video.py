"""The flicker metric (stylize_fast.evaluation.flicker) and `stylize-fast evaluate-video`:
warping is exact where it must be, the metric is ~0 on videos whose frames are exact warps of
each other and grows with per-frame noise, occluded / leaving pixels are left out, and the
command prints its two lines, writes its CSV and PNG, and refuses bad inputs clearly."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from stylize_fast.cli import main
from stylize_fast.evaluation import flicker
from stylize_fast.evaluation.flicker import (
    PairMotion,
    estimate_flow,
    evaluate_video,
    occlusion_mask,
    pair_error,
    warp,
    warping_errors,
    warping_report,
)
from stylize_fast.models import JohnsonNet, save

from .video_helpers import (
    LOSSLESS_CODECS,
    camera_pan,
    camera_pan_flows,
    photo,
    read_video,
    write_audio_only,
    write_corrupt_video,
    write_video,
)

cv2 = pytest.importorskip("cv2")

pytestmark = pytest.mark.filterwarnings("ignore:.*PaddedConv2d is not available")

SIZE = (64, 64)
FRAMES = 8
# Below this, a warping error (RGB in [0, 1], squared) counts as "no flicker": 1e-3 of the
# range squared, i.e. an RMS difference of ~3% of the range.
ZERO = 1e-3


@pytest.fixture(scope="module")
def source():
    return photo("astronaut", size=(160, 160))


@pytest.fixture(scope="module")
def pan(source):
    """8 frames of an integer-pixel pan (2 right, 1 down per frame): exact copies."""
    return camera_pan(source, FRAMES, SIZE, step=(2, 1))


def _grid(h, w):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return xs, ys


def _describe(actual, expected):
    """Where two arrays differ most, for assertion messages."""
    diff = np.abs(np.asarray(actual, np.float64) - expected)
    at = np.unravel_index(np.argmax(diff), diff.shape)
    return f"max |diff| {diff.max():.3g} at {at}: {actual[at]} vs {expected[at]}"


# -- warp ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("shift", [(3, -2), (-5, 0), (0, 4)])
def test_warp_integer_shift_is_exact(shift, dtype):
    rng = np.random.default_rng(1)
    image = (rng.random((20, 24, 3)) * 255).astype(dtype)
    dx, dy = shift
    flow = np.broadcast_to(np.float32(shift), (20, 24, 2))
    out = warp(image, flow)
    # out[y, x] = image[y + dy, x + dx] wherever that pixel exists.
    ys = slice(max(0, -dy), 20 - max(0, dy))
    xs = slice(max(0, -dx), 24 - max(0, dx))
    expected = image[ys.start + dy:ys.stop + dy, xs.start + dx:xs.stop + dx]
    assert np.array_equal(out[ys, xs], expected.astype(out.dtype))
    assert out.dtype == (np.float64 if dtype == np.float64 else np.float32)


def test_warp_varying_integer_flow_is_exact():
    rng = np.random.default_rng(2)
    image = rng.random((16, 16))
    flow = rng.integers(-3, 4, (16, 16, 2)).astype(np.float32)
    xs, ys = _grid(16, 16)
    sx = np.clip(xs + flow[..., 0], 0, 15).astype(int)
    sy = np.clip(ys + flow[..., 1], 0, 15).astype(int)
    assert np.array_equal(warp(image, flow), image[sy, sx])  # border: nearest edge pixel


def _bilinear_function(xs, ys):
    # Reproduced exactly by bilinear interpolation: affine terms plus an x*y term.
    return 3.0 + 0.7 * xs - 1.3 * ys + 0.05 * xs * ys


@pytest.mark.parametrize("case", ["constant", "varying"])
def test_warp_subpixel_matches_an_analytic_image(case):
    h, w = 24, 32
    xs, ys = _grid(h, w)
    image = _bilinear_function(xs, ys)
    if case == "constant":
        flow = np.zeros((h, w, 2))
        flow[..., 0], flow[..., 1] = 0.3, -0.7
    else:
        flow = np.stack([1.5 * np.sin(ys / 5) + 0.25, 1.2 * np.cos(xs / 7) - 0.4], -1)
    flow = flow.astype(np.float32)
    out = warp(image, flow)
    sx, sy = xs + flow[..., 0], ys + flow[..., 1]
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    expected = _bilinear_function(sx, sy)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(out[inside], expected[inside], rtol=0, atol=1e-9,
                               err_msg=_describe(np.where(inside, out, 0),
                                                 np.where(inside, expected, 0)))


def test_warp_subpixel_smooth_image_within_the_interpolation_bound():
    # sin(a x): bilinear interpolation errs by at most a^2 / 8 (|f''| h^2 / 8, h = 1).
    h, w, a = 8, 64, 0.3
    xs, _ = _grid(h, w)
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0] = 0.5
    out = warp(np.sin(a * xs), flow)[:, :-1]
    error = np.abs(out - np.sin(a * (xs[:, :-1] + 0.5)))
    assert error.max() <= a * a / 8 + 1e-12
    assert error.max() > a * a / 8 * 0.5  # and it is an interpolation, not a nearest lookup


def test_warp_rejects_bad_shapes_and_non_finite_flow():
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        warp(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="flow's H, W"):
        warp(np.zeros((5, 4, 3)), np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        warp(np.zeros((4, 4)), np.full((4, 4, 2), np.nan))


# -- flow and occlusion --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_estimate_flow_direction_and_accuracy(source, method):
    frames = camera_pan(source, 2, SIZE, step=(2, 1))
    truth = camera_pan_flows(source.shape, 2, SIZE, step=(2, 1))[0]  # (2, 1): t -> t-1
    backward = estimate_flow(frames[1], frames[0], method)
    forward = estimate_flow(frames[0], frames[1], method)
    assert backward.shape == (*SIZE, 2) and backward.dtype == np.float32
    inner = (slice(8, -8), slice(8, -8))
    np.testing.assert_allclose(np.median(backward[inner], axis=(0, 1)), [2, 1], atol=0.1)
    np.testing.assert_allclose(np.median(forward[inner], axis=(0, 1)), [-2, -1], atol=0.1)
    assert np.median(np.linalg.norm(backward - truth, axis=-1)) < 0.25
    # The documented convention: warp(next, estimate_flow(prev, next)) ~ prev.
    assert np.abs(warp(frames[0], backward)[inner] - frames[1][inner]).mean() < 2.0


def test_estimate_flow_float_frames_take_their_value_range(pan):
    a = estimate_flow(pan[1], pan[0])
    b = estimate_flow(pan[1].astype(np.float32) / 255, pan[0].astype(np.float32) / 255)
    c = estimate_flow(pan[1].astype(np.float32), pan[0].astype(np.float32), value_range=255)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError, match="method"):
        estimate_flow(pan[1], pan[0], "raft")


def test_occlusion_mask_flags_pixels_that_leave_the_frame():
    h, w, (dx, dy) = 20, 30, (3, -2)
    backward = np.broadcast_to(np.float32([dx, dy]), (h, w, 2))
    forward = -backward
    mask = occlusion_mask(forward, backward)
    xs, ys = _grid(h, w)
    leaving = (xs + dx > w - 1) | (ys + dy < 0)  # the last 3 columns, the first 2 rows
    np.testing.assert_array_equal(mask, leaving)
    assert mask.sum() == 3 * h + 2 * w - 3 * 2


def test_occlusion_mask_forward_backward_criterion():
    h, w = 12, 12
    b = np.zeros((h, w, 2), np.float32)
    b[..., 0] = 1.0
    # Consistent: f(x + b) = -b. Inconsistent: f = +b (|2b|^2 = 4 >= 0.01 * 2 + 0.5).
    inner = (slice(None), slice(0, w - 1))
    assert not occlusion_mask(-b, b)[inner].any()
    assert occlusion_mask(b, b).all()
    # Small disagreements pass through the constant term: |b + f|^2 = 0.36 < 0.5.
    assert not occlusion_mask(-b + np.float32([0.6, 0]), b)[inner].any()
    # An occluder: where frame t's pixels map onto a patch whose forward flow points elsewhere.
    f = -b.copy()
    f[4:8, 4:8] = [5.0, 0.0]
    mask = occlusion_mask(f, b)
    assert mask[4:8, 3:7].all() and not mask[:4, :w - 1].any()


# -- the metric ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_exact_warps_have_no_flicker(pan, method):
    errors = warping_errors(pan, method=method)
    assert len(errors) == FRAMES - 1
    assert max(errors) < ZERO, errors


def test_exact_warps_with_true_flow_have_zero_error(source, pan):
    flows = camera_pan_flows(source.shape, FRAMES, SIZE, step=(2, 1))
    xs, ys = _grid(*SIZE)
    for t in range(1, FRAMES):
        flow = flows[t - 1]
        inside = (xs + flow[..., 0] <= SIZE[1] - 1) & (ys + flow[..., 1] <= SIZE[0] - 1)
        assert pair_error(pan[t - 1], pan[t], PairMotion(flows[t - 1], inside)) == 0.0


def test_subpixel_zoom_rotation_pan_has_little_flicker(source):
    frames = camera_pan(source, 5, SIZE, step=(1.5, -0.5), zoom=0.02, rotation=1.0)
    assert max(warping_errors(frames)) < ZERO


def test_camera_pan_flows_are_the_true_motion(source):
    kwargs = dict(step=(1.5, -0.5), zoom=0.03, rotation=2.0)
    frames = camera_pan(source, 3, SIZE, **kwargs)
    flows = camera_pan_flows(source.shape, 3, SIZE, **kwargs)
    xs, ys = _grid(*SIZE)
    for t, flow in enumerate(flows, 1):
        sx, sy = xs + flow[..., 0], ys + flow[..., 1]
        inside = (sx >= 0) & (sx <= SIZE[1] - 1) & (sy >= 0) & (sy <= SIZE[0] - 1)
        true = pair_error(frames[t - 1], frames[t], PairMotion(flow, inside))
        wrong = pair_error(frames[t - 1], frames[t], PairMotion(-flow, inside))
        assert true < ZERO / 2 and wrong > 10 * true  # resampling blur only


def test_photo_without_scikit_image_is_a_textured_stand_in(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    image = photo("coffee", size=(96, 128))
    assert image.shape == (96, 128, 3) and image.dtype == np.uint8 and image.std() > 25
    assert max(warping_errors(camera_pan(image, 4, (48, 48), step=(2, 1)))) < ZERO


def test_error_grows_with_per_frame_noise(pan):
    rng = np.random.default_rng(3)
    clean = [f.astype(np.float64) / 255 for f in pan]
    sigmas = [0.0, 0.01, 0.03, 0.1]
    means = []
    for sigma in sigmas:
        noisy = [f + rng.normal(0, sigma, f.shape) for f in clean]
        report = warping_report(noisy, clean)  # flows on the clean input
        means.append(report.warping_error)
        # Independent noise in both frames adds E[(n_t - warp(n_t-1))^2] = (1 + k) sigma^2,
        # k in [0.25, 1] the sum of squared bilinear weights: 2 sigma^2 for integer flows, a
        # little less for estimates a fraction of a pixel off (about 0.93 * 2 sigma^2 here).
        excess = report.warping_error - report.input_warping_error
        assert 0.8 * 2 * sigma ** 2 <= excess + 1e-12 <= 1.02 * 2 * sigma ** 2 + 1e-12, sigma
    assert all(a < b for a, b in zip(means, means[1:])), means


def test_flow_frames_drive_the_flow_and_value_ranges_agree(pan):
    # A per-frame-constant recolouring (255 - x) keeps every squared difference.
    inverted = [255 - f for f in pan]
    report = warping_report(inverted, pan)
    # (uint8 frames are warped in float32)
    np.testing.assert_allclose(report.warping_errors, report.input_warping_errors, rtol=1e-5)
    as_float = warping_errors([f.astype(np.float32) for f in pan], value_range=255)
    np.testing.assert_allclose(as_float, warping_errors(pan), rtol=1e-6)
    assert [r["frame"] for r in report.rows()] == list(range(1, FRAMES))


def test_warping_errors_needs_two_frames(pan):
    with pytest.raises(ValueError, match="at least 2 frames"):
        warping_errors(pan[:1])
    with pytest.raises(ValueError, match="7 frames but 8 flow frames"):
        warping_errors(pan[:7], pan)


def test_missing_opencv_says_how_to_install(monkeypatch, pan):
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)
    with pytest.raises(ValueError, match="pip install opencv-python-headless"):
        warping_errors(pan[:2])


# -- videos --------------------------------------------------------------------------------------


class Identity(nn.Module):
    def forward(self, x):
        return x


class Flicker(nn.Module):
    """Adds a different brightness offset to every frame it sees."""

    def __init__(self):
        super().__init__()
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, x):
        return x + torch.randn(x.shape[0], 1, 1, 1, generator=self.generator) * 20


@pytest.fixture(scope="module")
def video(tmp_path_factory, pan):
    pytest.importorskip("av")
    path = tmp_path_factory.mktemp("video") / "pan.mp4"
    codec = write_video(path, pan)
    assert codec in LOSSLESS_CODECS, f"PyAV here has no lossless encoder (got {codec})"
    assert all(np.array_equal(a, b) for a, b in zip(read_video(path), pan))
    return str(path)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pth"
    save(JohnsonNet("fused", channels=4, num_residual=1), path)
    return str(path)


def test_evaluate_video_pairs_each_frame_with_its_input(video):
    # batch_size 3 does not divide 8 frames: the stylised frames must stay with their inputs.
    report = evaluate_video(Identity(), video, batch_size=3)
    assert report.frames == FRAMES and report.source == video
    assert report.warping_errors == report.input_warping_errors
    assert report.input_warping_error < ZERO
    noisy = evaluate_video(Flicker(), video, batch_size=3)
    assert noisy.warping_error > 20 * max(noisy.input_warping_error, 1e-6)


def test_evaluate_video_max_frames_and_ready_stylizer(video, model_file):
    from stylize_fast.inference import Stylizer

    stylizer = Stylizer(model_file, batch_size=2)
    report = evaluate_video(stylizer, video, max_frames=4, method="farneback")
    assert len(report.warping_errors) == 3 and report.method == "farneback"
    with pytest.raises(ValueError, match="ready Stylizer"):
        evaluate_video(stylizer, video, batch_size=2)
    with pytest.raises(ValueError, match="max_frames"):
        evaluate_video(stylizer, video, max_frames=1)


def test_cli_prints_two_lines_and_writes_csv_and_png(tmp_path, video, model_file, capsys):
    out_csv, out_png = tmp_path / "out" / "errors.csv", tmp_path / "errors.png"
    rc = main(["evaluate-video", "--model", model_file, "--input", video, "--csv", str(out_csv),
               "--plot", str(out_png), "--batch-size", "3", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    last = captured.out.strip().splitlines()[-2:]
    assert last[0].startswith("warping_error=") and last[1].startswith("input_warping_error=")
    stylized, floor = float(last[0].split("=")[1]), float(last[1].split("=")[1])
    assert 0 <= floor < ZERO and stylized >= 0
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["frame", "input_warping_error", "warping_error", "valid_fraction"]
    assert len(rows) == FRAMES - 1 and [int(r["frame"]) for r in rows] == list(range(1, FRAMES))
    assert np.mean([float(r["warping_error"]) for r in rows]) == pytest.approx(stylized, rel=1e-6)
    assert all(0.5 < float(r["valid_fraction"]) <= 1 for r in rows)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_passes_the_style_choice_to_multi_style_models(tmp_path, video, capsys):
    torch.manual_seed(0)
    path = tmp_path / "multi.pth"
    save(JohnsonNet("fused", channels=4, num_residual=1, styles=2), path)
    base = ["evaluate-video", "--model", str(path), "--input", video, "--max-frames", "3",
            "--no-progress"]
    assert main(base) == 1
    assert "holds 2 styles" in capsys.readouterr().err
    assert main(base + ["--style-index", "1"]) == 0
    assert main(base + ["--style-weights", "1,1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("input_warping_error=")


def _cli_error(capsys, model_file, video, *extra):
    rc = main(["evaluate-video", "--model", model_file, "--input", str(video), "--no-progress",
               *extra])
    err = capsys.readouterr().err
    assert rc != 0
    return err


def test_cli_missing_files(tmp_path, model_file, video, capsys):
    pytest.importorskip("av")
    assert "video not found" in _cli_error(capsys, model_file, tmp_path / "nope.mp4")
    assert "model file not found" in _cli_error(capsys, str(tmp_path / "no.pth"), video)


def test_cli_corrupt_and_non_video_files(tmp_path, model_file, capsys):
    pytest.importorskip("av")
    write_corrupt_video(tmp_path / "cut.mp4")
    err = _cli_error(capsys, model_file, tmp_path / "cut.mp4")
    assert "cut.mp4: cannot open video" in err and "corrupt or truncated" in err
    (tmp_path / "notes.mp4").write_text("not a video\n" * 20)
    assert "cannot open video" in _cli_error(capsys, model_file, tmp_path / "notes.mp4")


def test_cli_one_frame_video(tmp_path, model_file, pan, capsys):
    pytest.importorskip("av")
    write_video(tmp_path / "one.mp4", pan[:1])
    assert "1 frame(s); the warping error needs at least 2 frames" in \
        _cli_error(capsys, model_file, tmp_path / "one.mp4")


def test_cli_no_video_stream(tmp_path, model_file, capsys):
    pytest.importorskip("av")
    if write_audio_only(tmp_path / "tone.mp4") is None:
        pytest.skip("PyAV here cannot encode audio")
    err = _cli_error(capsys, model_file, tmp_path / "tone.mp4")
    assert "tone.mp4: no video stream (streams: audio)" in err


def test_evaluate_video_checks_opencv_before_decoding(monkeypatch, video):
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)
    with pytest.raises(ValueError, match="pip install opencv-python-headless"):
        evaluate_video(Identity(), video)
    assert flicker.FLOW_METHODS == ("dis", "farneback")
