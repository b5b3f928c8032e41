"""Arbitrary-style transfer (AdaIN, Huang & Belongie 2017): sf.functional.adain against its formula
in float64, AdaINNet (encoder = torchvision's VGG-19 features up to relu4_1, fused vs plain twin,
alpha, style mixing, save / load, ONNX), colour matching, and the decoder training loop (learns,
resumes exactly). Small images and an untrained encoder throughout."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

import stylize_fast as sf
from stylize_fast.functional import adain, adain_with_stats, mean_std
from stylize_fast.inference.color import match_color
from stylize_fast.models.adain import AdaINNet
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    make_input,
    poisoned_outputs,
    tolerance,
)
from stylize_fast.training import vgg as vgg_mod
from stylize_fast.training.adain import AdaINTrainConfig, train_adain
from stylize_fast.training.data import synthetic_images
from stylize_fast.training.trainer import CHECKPOINT_FORMAT, atomic_save

from .conftest import CPU_TENSOR_BACKENDS
from .train_helpers import assert_same_state

# The instance-norm backends the fused AdaIN runs on here (the reference included: it is the
# fallback a user may force).
BACKENDS = [b for b in CPU_TENSOR_BACKENDS if b != "triton"]


pytestmark = pytest.mark.usefixtures("one_thread")


def adain_formula(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """``sigma(y) (x - mu(x)) / sigma(x) + mu(y)`` in float64, statistics over H, W, biased
    variance, ``sigma = sqrt(var + eps)``."""
    x, y = x.double(), y.double()
    mx, vx = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
    my, vy = y.mean((2, 3), keepdim=True), y.var((2, 3), unbiased=False, keepdim=True)
    return (vy + eps).sqrt() * (x - mx) / (vx + eps).sqrt() + my


# ---------------------------------------------------------------------------------------------
# sf.functional.adain / adain_with_stats / mean_std


ADAIN_SHAPES = [
    pytest.param((2, 3, 5, 7), (1, 3, 4, 6), id="odd-style-batch1"),  # broadcast over the batch
    pytest.param((3, 4, 6, 5), (3, 4, 9, 2), id="per-sample-style"),
    pytest.param((1, 35, 3, 3), (1, 35, 8, 8), id="c35"),  # vector tail in the channel loop
    pytest.param((2, 16, 1, 1), (1, 16, 2, 3), id="content-hw1"),  # content variance 0
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("content_shape,style_shape", ADAIN_SHAPES)
def test_adain_matches_formula(backend, layout, dtype, content_shape, style_shape):
    g = torch.Generator().manual_seed(1)
    x = make_input(content_shape, dtype, layout, generator=g, mean=1.5, std=3.0)
    y = make_input(style_shape, dtype, "contiguous", generator=g, mean=-0.7, std=0.5)
    with sf.backends.use(backend), poisoned_outputs():
        out = adain(x, y, eps=1e-5)
    assert_all_written(out)
    expected = adain_formula(x, y, 1e-5)
    assert out.dtype == dtype
    if content_shape[2] * content_shape[3] > 1:  # (N, C, 1, 1) is in both layouts at once
        assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    # Outputs are O(sigma(y) * normalised): the norm's tolerance scaled by the style's spread.
    assert_close(out, expected, **tolerance(dtype, scale=4.0))


def test_mean_std_convention_and_with_stats():
    g = torch.Generator().manual_seed(2)
    x = make_input((2, 5, 7, 3), torch.float64, generator=g)
    y = make_input((1, 5, 4, 4), torch.float64, generator=g, mean=2.0)
    mean, std = mean_std(y, eps=1e-3)
    var, mu = torch.var_mean(y, dim=(2, 3), unbiased=False)
    assert mean.shape == std.shape == (1, 5)
    assert_close(mean, mu, atol=1e-12, rtol=1e-12)
    assert_close(std, (var + 1e-3).sqrt(), atol=1e-12, rtol=1e-12)
    assert_close(adain_with_stats(x, mean, std, eps=1e-3), adain(x, y, eps=1e-3),
                 atol=1e-12, rtol=1e-12)
    # half inputs: statistics in float32
    assert mean_std(y.to(torch.bfloat16))[0].dtype == torch.float32


def test_adain_gradcheck_all_inputs():
    g = torch.Generator().manual_seed(3)
    x = make_input((2, 3, 4, 5), torch.float64, generator=g, requires_grad=True)
    y = make_input((1, 3, 3, 4), torch.float64, generator=g, mean=1.0, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: adain(a, b, eps=1e-3), (x, y))
    y2 = make_input((2, 3, 5, 3), torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: adain(a, b, eps=1e-3), (x, y2))
    mean = make_input((1, 3), torch.float64, generator=g, requires_grad=True)
    std = (make_input((2, 3), torch.float64, generator=g).abs() + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, m, s: adain_with_stats(a, m, s, eps=1e-3),
                                    (x, mean, std))


def test_adain_content_contrast_invariance():
    # adain(a x + b, y) == adain(x, y) for a > 0: mean and scale of the content are normalised
    # away. eps = 1e-12 against variances O(4) and O(100): its effect is ~1e-13 relative.
    g = torch.Generator().manual_seed(4)
    x = make_input((2, 6, 9, 7), torch.float64, generator=g)
    y = make_input((1, 6, 5, 5), torch.float64, generator=g, mean=3.0)
    assert_close(adain(5.0 * x - 40.0, y, eps=1e-12), adain(x, y, eps=1e-12),
                 atol=1e-10, rtol=1e-10)
    # ... and the output has exactly the style's statistics.
    m_out, s_out = mean_std(adain(x, y, eps=1e-12), eps=1e-12)
    m_y, s_y = mean_std(y, eps=1e-12)
    assert_close(m_out, m_y.expand_as(m_out), atol=1e-10, rtol=1e-10)
    assert_close(s_out, s_y.expand_as(s_out), atol=1e-10, rtol=1e-10)


def test_adain_argument_errors():
    x, y = torch.randn(2, 3, 4, 4), torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="content_features must have 4 dimensions"):
        adain(x[0], y)
    with pytest.raises(ValueError, match="style_features must have 4 dimensions"):
        adain(x, y[0])
    with pytest.raises(ValueError, match="style_features must have the content's 3 channels"):
        adain(x, torch.randn(1, 4, 4, 4))
    with pytest.raises(ValueError, match="style_features must have batch 1 or the content's"):
        adain(x, torch.randn(3, 3, 4, 4))
    with pytest.raises(ValueError, match="content_features must be a floating-point"):
        adain(x.long(), y)
    with pytest.raises(ValueError, match="style_mean must have shape"):
        adain_with_stats(x, torch.zeros(3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="style_std must have shape"):
        adain_with_stats(x, torch.zeros(1, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="features must have 4 dimensions"):
        mean_std(torch.randn(3, 4))


# ---------------------------------------------------------------------------------------------
# AdaINNet


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(5)
    return AdaINNet(vgg_weights="random").eval()


def images(n: int, h: int, w: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, h, w, generator=g, dtype=torch.float64) * 255).to(dtype)


# torchvision vgg19 "features" conv indices and channel plan, written independently of vgg.py.
_VGG19_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256),
                12: (256, 256), 14: (256, 256), 16: (256, 256), 19: (256, 512), 21: (512, 512),
                23: (512, 512), 25: (512, 512), 28: (512, 512), 30: (512, 512), 32: (512, 512),
                34: (512, 512)}
_VGG19_POOLS = (4, 9, 18)  # below relu4_1 (index 20)


def torchvision_vgg19_file(path) -> dict:
    """A torchvision-format vgg19 state dict with random weights where AdaINNet reads them
    (features.0 .. features.19) and zero-stride placeholders of the right shapes elsewhere (the
    deep layers and the classifier take no disk space)."""
    g = torch.Generator().manual_seed(6)
    state = {}
    for index, (cin, cout) in _VGG19_CONVS.items():
        if index <= 19:
            state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (
                2.0 / (9 * cin)) ** 0.5
            state[f"features.{index}.bias"] = torch.randn(cout, generator=g) * 0.1
        else:
            state[f"features.{index}.weight"] = torch.zeros(1).expand(cout, cin, 3, 3)
            state[f"features.{index}.bias"] = torch.zeros(1).expand(cout)
    for index, (cin, cout) in {0: (25088, 4096), 3: (4096, 4096), 6: (4096, 1000)}.items():
        state[f"classifier.{index}.weight"] = torch.zeros(1).expand(cout, cin)
        state[f"classifier.{index}.bias"] = torch.zeros(1).expand(cout)
    torch.save(state, path)
    return state


def test_encoder_is_torchvision_vgg19_to_relu4_1(tmp_path):
    path = tmp_path / "vgg19-test.pth"
    state = torchvision_vgg19_file(path)
    model = AdaINNet(vgg_weights=str(path))
    own = model.state_dict()
    for index in (i for i in _VGG19_CONVS if i <= 19):
        for kind in ("weight", "bias"):
            assert torch.equal(own[f"encoder.features.{index}.{kind}"],
                               state[f"features.{index}.{kind}"]), f"features.{index}.{kind}"
    assert not [k for k in own if k.startswith("encoder.") and int(k.split(".")[2]) > 19]
    assert len(model.encoder.features) == 21 and model.encoder.names[20] == "relu4_1"
    assert isinstance(model.encoder.features[20], torch.nn.ReLU)
    assert str(path) in model.encoder.source.label and str(path) in repr(model)
    assert model.options["encoder_label"] == model.encoder.source.label

    # relu4_1 = torchvision's features[:21] on ImageNet-normalised input, 1/8 resolution.
    x = images(2, 32, 40, seed=7)
    mean = torch.tensor(vgg_mod.IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(vgg_mod.IMAGENET_STD).view(1, 3, 1, 1) * 255
    h = ((x - mean) / std).double()
    for index in range(21):
        if index in _VGG19_CONVS:
            h = F.conv2d(h, state[f"features.{index}.weight"].double(),
                         state[f"features.{index}.bias"].double(), padding=1)
        elif index in _VGG19_POOLS:
            h = F.max_pool2d(h, 2, 2)
        else:
            h = torch.relu(h)
    features = model.encode(x)
    assert features.shape == (2, 512, 4, 5)
    scale = float(h.abs().max())
    assert_close(features, h, atol=1e-4 * scale, rtol=1e-4)
    plain = model.to_plain()
    assert plain.encoder.kernels == "eager" and model.encoder.kernels == "package"
    assert_close(plain.encode(x), h, atol=1e-4 * scale, rtol=1e-4)


def test_encoder_frozen_and_in_eval(net):
    model = AdaINNet(vgg_weights="random").train()
    assert model.training and model.decoder.training and not model.encoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_and_plain_twins_match(net, dtype):
    fused = AdaINNet(vgg_weights="random").to(dtype)
    with torch.no_grad():  # a non-trivial decoder (default init gives near-zero outputs)
        for p in fused.decoder.parameters():
            p.mul_(3.0)
    plain = AdaINNet("instance", vgg_weights="state_dict").to(dtype)
    assert list(plain.state_dict()) == list(fused.state_dict())
    plain.load_state_dict(fused.state_dict())
    content, style = images(2, 16, 24, seed=8, dtype=dtype), images(1, 16, 16, seed=9, dtype=dtype)
    with torch.no_grad():
        out = fused(content, style, alpha=0.7)
        ref = plain(content, style, alpha=0.7)
        converted = fused.to_plain()(content, style, alpha=0.7)
    assert out.shape == content.shape
    scale = float(ref.abs().max())
    assert scale > 1.0
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert_close(out, ref, atol=tol * scale, rtol=tol)
    assert torch.equal(converted, ref)
    # channels_last in, channels_last out
    with torch.no_grad():
        cl = fused(content.contiguous(memory_format=torch.channels_last), style, alpha=0.7)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert_close(cl, out, atol=tol * scale, rtol=tol)


def test_alpha_interpolates_features(net):
    content, style = images(2, 32, 32, seed=10), images(1, 32, 32, seed=11)
    with torch.no_grad():
        f = net.encode(content)
        assert_close(net(content, style, alpha=0.0), net.decode(f), atol=1e-6, rtol=1e-6)
        t = net.adain(f, *net.style_stats(style))
        assert_close(net(content, style, alpha=0.3), net.decode(0.3 * t + 0.7 * f),
                     atol=1e-4, rtol=1e-4)
        assert_close(net(content, style), net.decode(t), atol=1e-6, rtol=1e-6)


def test_style_stats_mixing(net):
    content = images(2, 32, 32, seed=12, dtype=torch.float64)
    styles = [images(1, 32, 24, seed=13)[0], images(1, 40, 32, seed=14)[0],
              images(1, 24, 24, seed=15)]  # (3, H, W), (3, H, W), (1, 3, H, W): sizes differ
    model = AdaINNet(vgg_weights="random").double()
    styles = [s.double() for s in styles]
    with torch.no_grad():
        one_hot = model.style_stats(styles, weights=[0, 1, 0])
        single = model.style_stats(styles[1])
        assert one_hot[0].shape == one_hot[1].shape == (1, 512)
        assert_close(one_hot[0], single[0], atol=1e-12, rtol=1e-12)
        assert_close(one_hot[1], single[1], atol=1e-12, rtol=1e-12)
        # precomputed statistics give forward()'s result
        assert_close(model.stylize_with_stats(content, *single),
                     model(content, styles[1].unsqueeze(0)), atol=1e-9, rtol=1e-9)
        # weights are normalised; mixing statistics == mixing AdaIN outputs (Huang's interpolation)
        mixed = model.style_stats(styles[:2], weights=[1.0, 3.0])
        f = model.encode(content)
        s0, s1 = model.style_stats(styles[0]), model.style_stats(styles[1])
        assert_close(model.adain(f, *mixed),
                     0.25 * model.adain(f, *s0) + 0.75 * model.adain(f, *s1),
                     atol=1e-9, rtol=1e-9)
        equal = model.style_stats(torch.stack([styles[0], styles[0]]))
        assert_close(equal[0], s0[0], atol=1e-12, rtol=1e-12)


def test_model_argument_errors(net):
    c, s = images(1, 16, 16, seed=16), images(1, 16, 16, seed=17)
    with pytest.raises(ValueError, match="content must be an RGB batch"):
        net(c[0], s)
    with pytest.raises(ValueError, match="style must be an RGB batch"):
        net(c, s[:, :2])
    with pytest.raises(ValueError, match="style must have batch 1 or the content's batch 1"):
        net(c, torch.cat([s, s]))
    for alpha in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match=r"alpha .* must be a number in \[0, 1\]"):
            net(c, s, alpha=alpha)
    with pytest.raises(ValueError, match="weights must be finite and non-negative"):
        net.style_stats([s, s], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="weights are all zero"):
        net.style_stats([s, s], weights=[0, 0])
    with pytest.raises(ValueError, match="weights has 3 entries but there are 2 style images"):
        net.style_stats([s, s], weights=[1, 1, 1])
    with pytest.raises(ValueError, match="style_images is empty"):
        net.style_stats([])
    with pytest.raises(ValueError, match=r"style_images\[1\] must be an RGB batch"):
        net.style_stats([s, torch.rand(4, 8, 8)])
    with pytest.raises(ValueError, match="style mean must have shape"):
        net.stylize_with_stats(c, torch.zeros(1, 256), torch.ones(1, 512))
    with pytest.raises(ValueError, match="features must be"):
        net.decode(torch.zeros(1, 256, 2, 2))
    with pytest.raises(ValueError, match="norm must be one of"):
        AdaINNet("batch", vgg_weights="random")
    with pytest.raises(ValueError, match="encoder_label is only for"):
        AdaINNet(vgg_weights="random", encoder_label="x")


def test_save_load_round_trip_needs_no_vgg_file(tmp_path, monkeypatch):
    model = AdaINNet(vgg_weights="random").eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.01)
    path = tmp_path / "adain.pth"
    sf.models.save(model, path, iterations=3, style_data="styles")
    raw = torch.load(path, weights_only=True)
    assert raw["arch"] == "AdaINNet" and raw["options"]["vgg_weights"] == "state_dict"

    def no_weights(*_args, **_kwargs):
        raise AssertionError("loading a saved AdaINNet must not look for VGG weights")

    monkeypatch.setattr(vgg_mod, "locate_weights", no_weights)
    loaded = sf.models.load(path)
    assert isinstance(loaded, AdaINNet) and not loaded.training
    assert sf.models.load_checkpoint(path)["metadata"]["style_data"] == "styles"
    assert loaded.encoder.source.is_random  # the label survives the round trip
    content, style = images(2, 16, 24, seed=18), images(1, 16, 16, seed=19)
    with torch.no_grad():
        assert torch.equal(loaded(content, style), model(content, style))
        plain = sf.models.load(path, norm="instance")
        assert plain.norm == "instance" and plain.encoder.kernels == "eager"
        ref = model(content, style)
        assert_close(plain(content, style), ref, atol=1e-4 * float(ref.abs().max()), rtol=1e-4)


def test_onnx_export_of_plain_model(tmp_path, net):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import warnings

    plain = net.to_plain().eval()
    path = str(tmp_path / "adain.onnx")
    dynamic = {"content": {0: "n", 2: "h", 3: "w"}, "style": {0: "n_style", 2: "hs", 3: "ws"},
               "output": {0: "n", 2: "h", 3: "w"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(plain, (images(1, 32, 40, seed=20), images(1, 24, 32, seed=21)), path,
                          dynamo=False, input_names=["content", "style"],
                          output_names=["output"], dynamic_axes=dynamic)
    assert {node.domain for node in onnx.load(path).graph.node} <= {"", "ai.onnx"}
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for content, style in [(images(1, 32, 40, seed=20), images(1, 24, 32, seed=21)),
                           (images(2, 24, 16, seed=22), images(2, 40, 24, seed=23))]:
        (out,) = session.run(None, {"content": content.numpy(), "style": style.numpy()})
        with torch.no_grad():
            ref = net(content, style)
        assert_close(torch.from_numpy(out), ref, atol=1e-4 * float(ref.abs().max()) + 1e-4,
                     rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# Colour matching (--preserve-color)


def _colour_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = image.reshape(3, -1).double()
    mean = x.mean(1)
    return mean, torch.cov(x, correction=0)


def test_match_color_matches_mean_and_covariance():
    g = torch.Generator().manual_seed(22)
    source = torch.rand(3, 20, 30, generator=g, dtype=torch.float64) * 255
    mix = torch.tensor([[0.3, 0.1, 0.0], [0.05, 0.2, 0.1], [0.0, 0.1, 0.25]], dtype=torch.float64)
    target = (mix @ torch.randn(3, 17 * 25, generator=g, dtype=torch.float64) * 40
              + torch.tensor([[120.0], [100.0], [140.0]], dtype=torch.float64)).reshape(3, 17, 25)
    out = match_color(source, target)
    assert out.shape == source.shape and out.dtype == source.dtype
    assert 0 < out.min() and out.max() < 255  # the clamp did not cut anything here
    (m_out, c_out), (m_t, c_t) = _colour_stats(out), _colour_stats(target)
    assert_close(m_out, m_t, atol=1e-9, rtol=1e-9)
    assert_close(c_out, c_t, atol=1e-9, rtol=1e-9)
    # batched (1, 3, H, W) form, float32
    out32 = match_color(source.float().unsqueeze(0), target.float().unsqueeze(0))
    assert out32.shape == (1, 3, 20, 30) and out32.dtype == torch.float32
    # a flat source takes the target's mean colour; the result is clamped to 0..255
    flat = match_color(torch.full((3, 4, 4), 7.0), target.float())
    assert_close(flat[:, 0, 0], m_t.float(), atol=1e-3, rtol=1e-5)
    wild = match_color(source, target * 10)
    assert wild.min() >= 0 and wild.max() <= 255


def test_match_color_errors():
    with pytest.raises(ValueError, match="source must be one RGB image"):
        match_color(torch.rand(2, 3, 4, 4), torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="target must be one RGB image"):
        match_color(torch.rand(3, 4, 4), torch.rand(4, 4, 4))
    with pytest.raises(ValueError, match="target must be a floating-point"):
        match_color(torch.rand(3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------
# Training


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("adain_data")
    # Images as large as the crops: every iteration sees the same pixels, so the loss curve is
    # the optimisation's, not the batches' noise.
    synthetic_images(root / "content", 2, 16, seed=0)
    synthetic_images(root / "style", 1, 16, seed=1, prefix="style")
    return {"data": str(root / "content"), "style_data": str(root / "style")}


def adain_config(folders, output, **overrides) -> AdaINTrainConfig:
    base = dict(data=folders["data"], style_data=folders["style_data"], output=str(output),
                iterations=4, batch_size=2, image_size=16, vgg_weights="random",
                checkpoint_every=1000, sample_every=1000, log_every=1, workers=0, seed=3,
                progress=False)
    base.update(overrides)
    return AdaINTrainConfig(**base)


def test_training_reduces_loss_and_writes_files(folders, tmp_path):
    result = train_adain(adain_config(folders, tmp_path, iterations=24, log_every=8))
    totals = [h["total"] for h in result.history]
    assert result.iteration == 24 and len(totals) == 24
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last < 0.7 * first, totals
    assert all(h["lr"] == pytest.approx(1e-4 / (1 + 5e-5 * i)) for i, h in
               enumerate(result.history))
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["arch"] == "adain"
    assert ckpt["iteration"] == 24 and set(ckpt["decoder"]) == set(
        result.model.decoder.state_dict())
    log = [json.loads(line) for line in open(tmp_path / "train_log.jsonl")]
    assert [entry["iteration"] for entry in log] == [8, 16, 24]
    assert os.path.isfile(tmp_path / "samples" / "iter_0000024.png")
    loaded = sf.models.load(result.final_model)
    meta = sf.models.load_checkpoint(result.final_model)["metadata"]
    assert meta["iterations"] == 24 and meta["style_data"] == "style"
    assert "random" in meta["loss_network"]
    assert_same_state(loaded.state_dict(), result.model.state_dict())


def test_resume_is_exact(folders, tmp_path):
    full = train_adain(adain_config(folders, tmp_path / "full"))
    first = train_adain(adain_config(folders, tmp_path / "split", stop_at=2))
    assert first.iteration == 2 and first.final_model is None
    second = train_adain(adain_config(folders, tmp_path / "split", resume=True))
    assert second.iteration == 4
    assert_same_state(second.model.decoder.state_dict(), full.model.decoder.state_dict())
    assert [h["total"] for h in first.history + second.history] == \
        [h["total"] for h in full.history]


def test_resume_and_config_errors(folders, tmp_path):
    with pytest.raises(ValueError, match="checkpoint.pth exists: pass --resume"):
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "checkpoint.pth").write_bytes(b"")
        train_adain(adain_config(folders, tmp_path / "a"))
    atomic_save({"format": CHECKPOINT_FORMAT, "format_version": 1, "iteration": 2,
                 "config": {"arch": "johnson"}}, str(tmp_path / "b" / "checkpoint.pth"))
    with pytest.raises(ValueError, match="not from an --arch adain run"):
        train_adain(adain_config(folders, tmp_path / "b", resume=True))
    atomic_save({"format": CHECKPOINT_FORMAT, "format_version": 1, "iteration": 2, "arch": "adain",
                 "config": adain_config(folders, tmp_path / "c", lr=1e-3).to_dict()},
                str(tmp_path / "c" / "checkpoint.pth"))
    with pytest.raises(ValueError, match="lr: checkpoint 0.001 vs now 0.0001"):
        train_adain(adain_config(folders, tmp_path / "c", resume=True))
    with pytest.raises(FileNotFoundError, match="--style-data"):
        train_adain(adain_config(folders, tmp_path / "d", style_data=str(tmp_path / "none")))
    for overrides, message in [({"image_size": 20}, "--image-size must be a multiple of 8"),
                               ({"lr": 0.0}, "--lr must be a positive"),
                               ({"lr_decay": -1.0}, "--lr-decay must be"),
                               ({"content_weight": 0.0, "style_weight": 0.0}, "nothing to train"),
                               ({"stop_at": 9}, "stop_at must be in 1..iterations"),
                               ({"amp": "int8"}, "--amp must be"),
                               ({"batch_size": 0}, "--batch-size must be a positive integer")]:
        with pytest.raises(ValueError, match=message):
            adain_config(folders, tmp_path / "e", **overrides)
