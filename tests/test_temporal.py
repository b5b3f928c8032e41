"""Temporal consistency (``--temporal-weight``): the warp and its flow convention, the synthetic
motion's exact flow and mask, the luminance-corrected output-level loss (ReCoNet), and training
with it -- every generator and norm, multi-style, --add-style, AMP + channels_last, exact resume,
DDP equal to one process, bit-identical weights with the weight at 0, and the errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stylize_fast.cli import main as cli_main
from stylize_fast.training import trainer as trainer_mod
from stylize_fast.training.data import synthetic_images, synthetic_style
from stylize_fast.training.temporal import (
    TEMPORAL_SCALE,
    MotionConfig,
    luminance,
    pixel_grid,
    random_motion,
    sample_seeds,
    temporal_loss,
    valid_mask,
    warp,
)
from stylize_fast.training.trainer import TrainConfig, load_checkpoint, train

from .train_helpers import assert_same_state, tiny_config, train_on_ranks

pytestmark = pytest.mark.usefixtures("one_thread")

STILL = dict(max_shift=0.0, max_rotation=0.0, max_zoom=0.0, local_amplitude=0.0)
NO_PHOTOMETRIC = dict(brightness=0.0, noise=0.0)


def smooth_images(n: int, h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """``(n, 3, h, w)`` smooth RGB in [40, 216]: slowly varying sinusoids per channel, so that
    bilinear interpolation error is small."""
    return analytic(pixel_grid(h, w, torch.float64).expand(n, 2, h, w), n).to(dtype)


def analytic(points: torch.Tensor, n: int) -> torch.Tensor:
    """The smooth image of :func:`smooth_images` evaluated at real coordinates ``points``
    ``(n, 2, H, W)`` (x, y)."""
    x, y = points[:, :1].double(), points[:, 1:].double()
    phase = torch.arange(n, dtype=torch.float64).view(n, 1, 1, 1)
    chans = [128 + 60 * torch.sin(2 * math.pi * x / 37 + phase) * torch.cos(2 * math.pi * y / 45),
             128 + 80 * torch.cos(2 * math.pi * (x + y) / 53 + 2 * phase),
             128 + 50 * torch.sin(2 * math.pi * (x - 0.5 * y) / 41)]
    return torch.cat(chans, 1)


def show_mismatch(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> str:
    """Where ``a`` and ``b`` differ most (for assertion messages)."""
    diff = (a - b).abs() if mask is None else (a - b).abs() * mask
    flat = int(diff.argmax())
    index = torch.unravel_index(torch.tensor(flat), diff.shape)
    return (f"max |diff| {float(diff.max()):.3g} at {tuple(int(i) for i in index)}: "
            f"{float(a[index]):.6g} vs {float(b[index]):.6g}")


# -- warp -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-9), (torch.float32, 2e-3)])
@pytest.mark.parametrize("shift", [(3, -2), (-5, 0), (0, 4)])  # right/up, left only, down only
def test_warp_integer_translation_is_exact(dtype, atol, shift):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 17, dtype=dtype) * 255
    dx, dy = shift
    flow = torch.zeros(2, 2, 12, 17, dtype=dtype)
    flow[:, 0], flow[:, 1] = dx, dy
    out = warp(x, flow)
    # out(y, x) = in(y + dy, x + dx) where the source is inside the frame
    ys = slice(max(0, -dy), 12 - max(0, dy))
    xs = slice(max(0, -dx), 17 - max(0, dx))
    src = x[:, :, ys.start + dy:ys.stop + dy, xs.start + dx:xs.stop + dx]
    got = out[:, :, ys, xs]
    assert torch.allclose(got, src, rtol=0, atol=atol), show_mismatch(got, src)
    mask = valid_mask(flow)
    expected = torch.zeros_like(mask)
    expected[:, :, ys, xs] = 1
    assert torch.equal(mask, expected)


def test_warp_sub_pixel_matches_analytic_bilinear():
    h, w = 9, 11
    grid = pixel_grid(h, w, torch.float64)
    # an affine image is reproduced exactly by bilinear interpolation at any sub-pixel point
    affine = lambda p: 10 + 3 * p[:, :1] - 2 * p[:, 1:] + torch.zeros(1, 3, 1, 1)  # noqa: E731
    flow = torch.empty(1, 2, h, w, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = 0.3, -0.7
    mask = valid_mask(flow)
    out = warp(affine(grid), flow)
    want = affine(grid + flow)
    assert torch.allclose(out * mask, want * mask, atol=1e-9), show_mismatch(out, want, mask)
    # a non-affine image at a quarter pixel: 0.75 * left neighbour + 0.25 * right neighbour
    x = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w).square().expand(1, 3, h, w)
    flow = torch.zeros(1, 2, h, w, dtype=torch.float64)
    flow[:, 0] = 0.25
    out = warp(x, flow)[..., :-1]
    want = 0.75 * x[..., :-1] + 0.25 * x[..., 1:]
    assert torch.allclose(out, want, atol=1e-9), show_mismatch(out, want)


def test_warp_and_loss_check_shapes():
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="flow"):
        warp(x, torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="does not fit"):
        warp(x, torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="next_outputs"):
        temporal_loss(x, x[:1], x, x, torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="seeds"):
        random_motion(x, [1])


# -- synthetic motion ---------------------------------------------------------------------------


def test_pure_translation_follows_the_backward_convention():
    x = smooth_images(2, 24, 28)
    motion = random_motion(x, sample_seeds(0, 0, 0, 2), MotionConfig(
        max_shift=4.0, max_rotation=0.0, max_zoom=0.0, local_amplitude=0.0, **NO_PHOTOMETRIC))
    flow = motion.flow
    # constant per sample, within the range, not zero
    assert torch.allclose(flow, flow[:, :, :1, :1].expand_as(flow), atol=1e-5)
    assert 0 < flow.abs().max() <= 4.0
    # next(p) = current(p + flow(p)), checked against the analytic image
    want = analytic(pixel_grid(24, 28, torch.float64) + flow.double(), 2).float()
    m = motion.mask
    assert torch.allclose(motion.next * m, want * m, atol=0.6), \
        show_mismatch(motion.next, want, m)


def test_motion_flow_is_exact_for_a_smooth_image():
    x = smooth_images(4, 40, 48)
    config = MotionConfig(**NO_PHOTOMETRIC)  # translation + rotation + zoom + local field
    motion = random_motion(x, sample_seeds(7, 3, 0, 4), config)
    assert motion.next.shape == x.shape and motion.flow.shape == (4, 2, 40, 48)
    flow, m = motion.flow, motion.mask
    # a real motion: beyond a pure translation (rotation / zoom / local field vary it)
    assert float(flow.abs().max()) > 0.5
    assert float((flow - flow.mean((2, 3), keepdim=True)).abs().max()) > 0.1
    # bounded by shift + (zoom + rotation) * half diagonal + a few local sigmas
    assert float(flow.abs().max()) < 4 + (0.05 + math.radians(2)) * 32 + 5
    # the frame really is the current one sampled at p + flow(p): compared with the analytic
    # image there (error = bilinear interpolation of a smooth image, << the motion's effect)
    want = analytic(pixel_grid(40, 48, torch.float64) + flow.double(), 4).float()
    err = ((motion.next - want).abs() * m).max()
    assert err < 0.6, show_mismatch(motion.next, want, m)
    moved = ((motion.next - x).abs() * m).max()
    assert moved > 20 * err  # the motion is large against that error
    # and warp() with the returned flow reproduces it
    assert torch.allclose(warp(x, flow) * m, motion.next * m, atol=1e-3)


def test_motion_brightness_and_noise():
    x = smooth_images(3, 32, 32)
    config = MotionConfig(brightness=10.0, noise=2.0)
    motion = random_motion(x, sample_seeds(1, 2, 0, 3), config)
    residual = (motion.next - warp(x, motion.flow)) * motion.mask
    count = motion.mask.sum((1, 2, 3)) * 3
    mean = residual.sum((1, 2, 3)) / count
    assert torch.allclose(mean, motion.offset.float(), atol=0.3)  # the grey offset
    assert (motion.offset.abs() <= 10).all() and motion.offset.abs().max() > 0.5
    std = ((residual - mean.view(3, 1, 1, 1)).square() * motion.mask).sum((1, 2, 3)) / count
    assert torch.allclose(std.sqrt(), torch.full((3,), 2.0), rtol=0.15)  # the noise


def test_mask_excludes_out_of_frame_pixels():
    x = smooth_images(4, 32, 36)
    motion = random_motion(x, sample_seeds(5, 0, 0, 4), MotionConfig(max_shift=6.0))
    source = pixel_grid(32, 36) + motion.flow
    outside = ((source[:, :1] < -1e-3) | (source[:, :1] > 35 + 1e-3)
               | (source[:, 1:] < -1e-3) | (source[:, 1:] > 31 + 1e-3)).float()
    assert torch.equal(motion.mask, 1 - outside)
    assert (motion.mask.mean((1, 2, 3)) < 1).all()  # every sample moved some pixels out
    assert (motion.mask.mean((1, 2, 3)) > 0.6).all()


def test_draws_are_a_function_of_seed_iteration_and_global_position():
    x = smooth_images(4, 16, 16)
    a = random_motion(x, sample_seeds(3, 10, 0, 4))
    b = random_motion(x, sample_seeds(3, 10, 0, 4))
    assert torch.equal(a.next, b.next) and torch.equal(a.flow, b.flow)
    # rank r of batch B draws the global positions r*B .. r*B+B-1
    assert sample_seeds(3, 10, 1, 2) == sample_seeds(3, 10, 0, 4)[2:]
    assert sample_seeds(3, 11, 0, 4) != sample_seeds(3, 10, 0, 4)
    assert sample_seeds(4, 10, 0, 4) != sample_seeds(3, 10, 0, 4)
    # independent of the global RNG, and per sample independent of its batch-mates
    torch.manual_seed(123)
    c = random_motion(x[2:], sample_seeds(3, 10, 1, 2))
    assert torch.equal(c.flow, a.flow[2:]) and torch.equal(c.next, a.next[2:])
    # channels_last in, channels_last out
    cl = random_motion(x.contiguous(memory_format=torch.channels_last), sample_seeds(3, 10, 0, 4))
    assert cl.next.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl.next, a.next)


def test_motion_config_checks_its_ranges():
    for bad in (dict(max_shift=-1.0), dict(noise=math.nan), dict(max_zoom=0.6),
                dict(local_grid=1), dict(brightness=math.inf)):
        with pytest.raises(ValueError, match="MotionConfig"):
            MotionConfig(**bad)


# -- the loss -----------------------------------------------------------------------------------


def test_loss_is_zero_for_generators_that_commute_with_the_motion():
    x = smooth_images(3, 32, 32)
    motion = random_motion(x, sample_seeds(0, 1, 0, 3), MotionConfig(**NO_PHOTOMETRIC))
    args = (x, motion.next, motion.flow, motion.mask)
    assert float(temporal_loss(x, motion.next, *args)) < 1e-6  # identity
    # a per-pixel colour map commutes with warping (bilinear weights sum to 1)
    colour = lambda t: t.flip(1) * 0.5 + torch.tensor([20.0, 0, -10]).view(1, 3, 1, 1)  # noqa: E731
    assert float(temporal_loss(colour(x), colour(motion.next), *args)) < 1e-6
    # a pattern fixed to the screen (not to the content) does not: it flickers
    pattern = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 20
    loss = float(temporal_loss(x + pattern, motion.next + pattern, *args))
    # (pattern - warp(pattern)) has variance 20^2 (1 + sum of squared bilinear weights)
    assert loss > 20 ** 2 / 255 ** 2 * TEMPORAL_SCALE
    # and so does a generator that ignores the motion (a constant-in-time output)
    assert float(temporal_loss(x, x, *args)) > 1e-3 * TEMPORAL_SCALE


def test_luminance_correction_allows_a_pure_brightness_change():
    x = smooth_images(2, 24, 24)  # in [40, 216]: no clamping at +-20
    for motion_config in (STILL, {}):  # a brightness change alone, and with motion
        motion = random_motion(x, sample_seeds(2, 0, 0, 2),
                               MotionConfig(**motion_config, brightness=20.0, noise=0.0))
        assert motion.offset.abs().min() > 1  # a real change
        args = (x, motion.next, motion.flow, motion.mask)
        corrected = float(temporal_loss(x, motion.next, *args))
        assert corrected < 1e-4, corrected
        # without the correction (the input not changing) the same outputs would cost offset^2
        uncorrected = float(temporal_loss(x, motion.next, x, warp(x, motion.flow),
                                          motion.flow, motion.mask))
        assert uncorrected == pytest.approx(
            float(motion.offset.square().mean()) / 255 ** 2 * TEMPORAL_SCALE, rel=1e-3)
    # the correction is the luminance of the change, applied to every channel
    change = torch.tensor([30.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert torch.allclose(luminance(change), torch.full((1, 1, 4, 4), 0.299 * 30))


def test_loss_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, 6, generator=gen, dtype=torch.float64) * 255
    motion = random_motion(x, sample_seeds(0, 0, 0, 2), MotionConfig(max_shift=1.5))
    out = torch.rand(2, 3, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    nxt = torch.rand(2, 3, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    assert motion.flow.dtype == torch.float64 and motion.mask.sum() > 0

    def loss(o, n):
        return temporal_loss(o * 255, n * 255, x, motion.next, motion.flow, motion.mask)

    assert torch.autograd.gradcheck(loss, (out, nxt))
    assert torch.autograd.gradcheck(lambda o: warp(o, motion.flow), (out,))


def test_loss_is_a_mean_of_per_sample_means():
    """So that DDP ranks of batch B average to the loss of one process of batch 2B."""
    x = smooth_images(4, 16, 16)
    motion = random_motion(x, sample_seeds(0, 0, 0, 4), MotionConfig(max_shift=5.0))
    y = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * 5
    yn = motion.next + torch.randn(x.shape, generator=torch.Generator().manual_seed(2)) * 5
    full = temporal_loss(y, yn, x, motion.next, motion.flow, motion.mask)
    halves = [temporal_loss(y[i:i + 2], yn[i:i + 2], x[i:i + 2], motion.next[i:i + 2],
                            motion.flow[i:i + 2], motion.mask[i:i + 2]) for i in (0, 2)]
    assert torch.allclose(full, sum(halves) / 2, rtol=1e-6)


# -- training -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("temporal")
    synthetic_images(root / "data", 6, 40, seed=0)
    for k in range(3):
        synthetic_style(root / f"style{k}.png", 48, seed=10 + k)
    return {"data": str(root / "data"), "style": str(root / "style0.png"),
            "styles": [str(root / f"style{k}.png") for k in range(3)], "root": root}


def _config(images, output, **kw) -> TrainConfig:
    options = dict(iterations=3, checkpoint_every=3, sample_every=3, temporal_weight=10.0)
    options.update(kw)
    return tiny_config(images, output, **options)


@pytest.mark.parametrize("arch,norm", [("johnson", "fused"), ("johnson", "instance"),
                                       ("johnson", "batch"), ("texture", "fused"),
                                       ("texture", "instance"), ("texture", "batch")])
def test_training_with_temporal_weight_runs(images, tmp_path, arch, norm):
    result = train(_config(images, tmp_path / "run", arch=arch, norm=norm))
    assert result.iteration == 3
    for h in result.history:
        assert h["temporal"] > 0 and math.isfinite(h["temporal"])
        assert h["total"] == pytest.approx(h["content"] + h["style"] + h["tv"] + h["temporal"],
                                           rel=1e-5)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text()
           .splitlines()]
    assert all("temporal" in e for e in log)
    assert load_checkpoint(str(tmp_path / "run" / "checkpoint.pth"))["config"][
        "temporal_weight"] == 10.0


def test_temporal_term_scales_with_the_weight_and_runs_one_generator_pass(images, tmp_path,
                                                                          monkeypatch):
    batches = []
    build = trainer_mod.build_generator

    def spied(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda m, a: batches.append(a[0].shape[0]) if m.training else None)
        return model

    monkeypatch.setattr(trainer_mod, "build_generator", spied)
    one = train(_config(images, tmp_path / "w1", iterations=1, temporal_weight=1.0))
    ten = train(_config(images, tmp_path / "w10", iterations=1, temporal_weight=10.0))
    assert batches == [4, 4]  # one pass over [x, x'] of the batch of 2
    assert ten.history[0]["temporal"] == pytest.approx(10 * one.history[0]["temporal"],
                                                       rel=1e-5)
    # the first iteration's perceptual terms are those of the same weights on the same x
    assert ten.history[0]["content"] == one.history[0]["content"]


def test_weight_zero_is_todays_path_bit_for_bit(images, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the temporal path ran with temporal_weight=0")

    default = train(tiny_config(images, tmp_path / "default", iterations=3))
    monkeypatch.setattr(trainer_mod, "random_motion", forbidden)
    monkeypatch.setattr(trainer_mod, "temporal_loss", forbidden)
    zero = train(tiny_config(images, tmp_path / "zero", iterations=3, temporal_weight=0.0))
    assert_same_state(default.model.state_dict(), zero.model.state_dict())
    assert all("temporal" not in h for h in zero.history)
    assert [h["total"] for h in default.history] == [h["total"] for h in zero.history]
    # and it trains something else with the term on
    monkeypatch.undo()
    on = train(_config(images, tmp_path / "on"))
    state = zero.model.state_dict()
    assert any(not torch.equal(v, state[k]) for k, v in on.model.state_dict().items())


@pytest.mark.parametrize("arch,norm", [("johnson", "fused"), ("texture", "batch")])
def test_resume_with_temporal_loss_is_exact(images, tmp_path, arch, norm):
    kw = dict(arch=arch, norm=norm, iterations=4, checkpoint_every=2)
    full = train(_config(images, tmp_path / "full", **kw))
    part = train(_config(images, tmp_path / "part", stop_at=2, **kw))
    assert part.iteration == 2
    torch.manual_seed(999)  # the motions must not come from the global RNG
    resumed = train(_config(images, tmp_path / "part", resume=True, **kw))
    assert resumed.history[0]["iteration"] == 3
    assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    assert [h["temporal"] for h in full.history[2:]] == [h["temporal"] for h in resumed.history]
    # a resumed run must keep the weight it started with
    with pytest.raises(ValueError, match=r"temporal_weight: checkpoint 10.0 vs now 5.0"):
        train(_config(images, tmp_path / "part", resume=True, temporal_weight=5.0, **kw))


def test_multi_style_add_style_amp_channels_last(images, tmp_path):
    multi = train(tiny_config({"data": images["data"], "style": images["styles"][:2]},
                              tmp_path / "multi", iterations=2, checkpoint_every=2,
                              sample_every=2, temporal_weight=10.0, amp="bfloat16",
                              channels_last=True))
    assert all(h["temporal"] > 0 for h in multi.history)
    added = train(tiny_config({"data": images["data"], "style": None}, tmp_path / "added",
                              add_style=images["styles"][2], model=str(tmp_path / "multi" /
                                                                        "model.pth"),
                              iterations=2, checkpoint_every=2, sample_every=2,
                              temporal_weight=10.0))
    assert all(h["temporal"] > 0 for h in added.history)
    before, after = multi.model.state_dict(), added.model.state_dict()
    for key, value in before.items():
        if after[key].shape != value.shape:  # a style table: the old rows are untouched
            assert torch.equal(after[key][:2], value) and not torch.equal(after[key][2], value[0])
        else:
            assert torch.equal(after[key], value), key


def _ddp_config(root, output, **kw) -> TrainConfig:
    from pathlib import Path

    root = Path(root)
    options = dict(norm="fused", iterations=2, batch_size=1, checkpoint_every=2, seed=11,
                   sample_every=5, temporal_weight=10.0)
    options.update(kw)
    styles = [str(root / f"style{k}.png") for k in range(2)]
    return tiny_config({"data": str(root / "data"), "style": styles}, output, **options)


def test_ddp_ranks_agree_and_match_one_process(images):
    root = images["root"]
    out = root / "ddp"
    out.mkdir()
    r0, r1 = train_on_ranks(_ddp_config(root, out), root / "ddp_ranks")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
    # 2 ranks x batch 1 (a 2-style model) draw the samples, styles and motions of 1 x batch 2
    single = train(_ddp_config(root, root / "single", batch_size=2))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == len(single.history) == 2
    for e, s in zip(log, single.history):
        for term in ("content", "style", "temporal", "total"):
            assert e[term] == pytest.approx(s[term], rel=1e-4), (term, e, s)
    # Weights: equal up to summation order. Adam normalises each gradient component, so one
    # that is rounding noise (e.g. a conv bias an instance norm removes) can move by lr either
    # way per step: at most 2 * lr * iterations apart, never more.
    state = single.model.state_dict()
    for k in r0:
        torch.testing.assert_close(r0[k], state[k], rtol=0, atol=2 * 1e-3 * 2 + 1e-6)


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, "10", True])
def test_bad_temporal_weight_is_refused(images, tmp_path, value):
    with pytest.raises(ValueError, match="--temporal-weight must be a finite number >= 0"):
        tiny_config(images, tmp_path / "bad", temporal_weight=value)


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "ten"])
def test_cli_refuses_bad_temporal_weight(images, tmp_path, capsys, text):
    with pytest.raises(SystemExit) as exc:
        cli_main(["train", "--style", images["style"], "--data", images["data"],
                  "--output", str(tmp_path / "o"), "--temporal-weight", text])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--temporal-weight" in err and ">= 0" in err


def test_cli_temporal_weight_trains_and_adain_refuses_it(images, tmp_path, capsys):
    common = ["--data", images["data"], "--iterations", "1", "--batch-size", "2",
              "--image-size", "32", "--vgg-weights", "random", "--workers", "0",
              "--no-progress", "--style-layers", "relu1_2"]
    code = cli_main(["train", "--style", images["style"], "--output", str(tmp_path / "cli"),
                     "--temporal-weight", "2.5", *common])
    assert code == 0
    ckpt = load_checkpoint(str(tmp_path / "cli" / "checkpoint.pth"))
    assert ckpt["config"]["temporal_weight"] == 2.5
    code = cli_main(["train", "--arch", "adain", "--style-data", images["data"],
                     "--output", str(tmp_path / "adain"), "--temporal-weight", "1", *common])
    assert code == 1 and "--temporal-weight" in capsys.readouterr().err
