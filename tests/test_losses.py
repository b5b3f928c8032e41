"""Perceptual losses against hand computations (float64 loops), presets and overrides."""

from __future__ import annotations

import pytest
import torch

from stylize_fast.training.losses import (
    PRESETS,
    LossConfig,
    PerceptualLoss,
    content_loss,
    gram_matrix,
    loss_config,
    style_loss,
    total_variation,
)
from stylize_fast.training.vgg import VGGFeatures


def _gram_by_hand(f):
    n, c, h, w = f.shape
    g = torch.zeros(n, c, c, dtype=torch.float64)
    for b in range(n):
        for i in range(c):
            for j in range(c):
                g[b, i, j] = sum(f[b, i, y, x] * f[b, j, y, x] for y in range(h) for x in range(w))
    return g / (c * h * w)


def _gram_broadcast(f):
    """Same definition without loops (for VGG-sized features): sum over positions of f_i f_j."""
    c, h, w = f.shape[1:]
    return (f.unsqueeze(2) * f.unsqueeze(1)).sum(dim=(-1, -2)) / (c * h * w)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 4, 5), (1, 5, 3, 2)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gram_matrix_by_hand(shape, layout):
    f = torch.randn(shape, dtype=torch.float64) + 0.5
    if layout == "channels_last":
        f = f.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(gram_matrix(f), _gram_by_hand(f), atol=1e-12, rtol=1e-12)
    # float32 (and bfloat16 under AMP) features accumulate in float32
    assert gram_matrix(f.float()).dtype == torch.float32
    assert gram_matrix(f.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gram_gradcheck(layout):
    """The one-GEMM backward (dF = scale (dG + dG^T) F) against finite differences, with an
    upstream gradient that is not symmetric; the gradient comes back in the features' layout."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    f = torch.randn(2, 3, 3, 4, dtype=torch.float64).contiguous(memory_format=fmt)
    f.requires_grad_()
    assert torch.autograd.gradcheck(gram_matrix, (f,))
    upstream = torch.randn(2, 3, 3, dtype=torch.float64)
    (grad,) = torch.autograd.grad(gram_matrix(f), f, upstream)
    (expected,) = torch.autograd.grad(_gram_by_hand(f), f, upstream)
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=1e-12)
    assert grad.is_contiguous(memory_format=fmt)


def test_content_loss_by_hand():
    a = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    b = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    pairs = zip(a.flatten().tolist(), b.flatten().tolist())
    expected = sum((x - y) ** 2 for x, y in pairs) / a.numel()
    assert content_loss(a, b).item() == pytest.approx(expected, rel=1e-6)


def test_style_loss_by_hand_with_layer_weights_and_broadcast_target():
    f64 = torch.float64
    grams = {"a": torch.randn(3, 2, 2, dtype=f64), "b": torch.randn(3, 4, 4, dtype=f64)}
    targets = {"a": torch.randn(1, 2, 2, dtype=f64), "b": torch.randn(1, 4, 4, dtype=f64)}
    weights = {"a": 0.5, "b": 3.0}
    expected = 0.0
    for k in grams:
        diff = [(grams[k][n] - targets[k][0]).pow(2).mean().item() for n in range(3)]
        expected += weights[k] * sum(diff) / 3
    assert style_loss(grams, targets, weights).item() == pytest.approx(expected, rel=1e-12)


def test_total_variation_by_hand():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    expected = 0.0
    for n in range(2):
        for c in range(3):
            for i in range(4):
                for j in range(5):
                    if i + 1 < 4:
                        expected += (x[n, c, i + 1, j] - x[n, c, i, j]).item() ** 2
                    if j + 1 < 5:
                        expected += (x[n, c, i, j + 1] - x[n, c, i, j]).item() ** 2
    assert total_variation(x).item() == pytest.approx(expected / 2, rel=1e-6)
    assert total_variation(torch.full((1, 3, 6, 6), 7.0)).item() == 0.0


def test_presets_match_published_setups():
    ex, jo, ul = loss_config("examples"), loss_config("johnson"), loss_config("ulyanov")
    assert (ex.vgg, ex.content_layers, ex.style_layers) == \
        ("vgg16", ["relu2_2"], ["relu1_2", "relu2_2", "relu3_3", "relu4_3"])
    assert (ex.content_weight, ex.style_weight, ex.tv_weight) == (1e5, 1e10, 0.0)
    assert (jo.vgg, jo.content_layers, jo.style_weight, jo.tv_weight) == \
        ("vgg16", ["relu3_3"], 5.0, 1e-6)
    assert (ul.vgg, ul.content_layers, ul.style_layers) == \
        ("vgg19", ["relu4_2"], ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
    assert set(PRESETS) == {"examples", "johnson", "ulyanov"}


def test_overrides_and_validation():
    cfg = loss_config("johnson", style_weight=2.0, content_layers=["relu2_2"], tv_weight=None)
    assert cfg.style_weight == 2.0 and cfg.content_layers == ["relu2_2"] and cfg.tv_weight == 1e-6
    with pytest.raises(ValueError, match="--preset"):
        loss_config("gatys")
    with pytest.raises(ValueError, match="style_weight"):
        LossConfig(style_weight=-1.0)
    with pytest.raises(ValueError, match="style_layer_weights"):
        LossConfig(style_layer_weights=[1.0])


def test_perceptual_loss_assembles_weighted_terms():
    cfg = LossConfig(vgg="vgg16", content_layers=["relu2_2"], style_layers=["relu1_2", "relu2_2"],
                     content_weight=2.0, style_weight=30.0, style_layer_weights=[1.0, 0.5],
                     tv_weight=1e-3)
    vgg = VGGFeatures("vgg16", ["relu1_2", "relu2_2"], init_seed=5).double()
    loss = PerceptualLoss(cfg, vgg=vgg)
    style = torch.rand(1, 3, 20, 20, dtype=torch.float64) * 255
    loss.set_style(style)
    content = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 255
    out = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 255
    terms = loss(out, content)
    fo, fc, fs = vgg(out), vgg(content), vgg(style)
    c = ((fo["relu2_2"] - fc["relu2_2"]) ** 2).mean()
    s = sum(w * ((_gram_broadcast(fo[k]) - _gram_broadcast(fs[k])) ** 2).mean()
            for k, w in (("relu1_2", 1.0), ("relu2_2", 0.5)))
    tv = total_variation(out)
    torch.testing.assert_close(terms["content"], 2.0 * c, rtol=1e-9, atol=0)
    torch.testing.assert_close(terms["style"], 30.0 * s, rtol=1e-9, atol=0)
    torch.testing.assert_close(terms["tv"], 1e-3 * tv, rtol=1e-9, atol=0)
    torch.testing.assert_close(terms["total"], 2.0 * c + 30.0 * s + 1e-3 * tv, rtol=1e-9, atol=0)


def test_perceptual_loss_needs_style_and_matching_network():
    cfg = LossConfig(vgg="vgg16", content_layers=["relu1_2"], style_layers=["relu1_2"])
    loss = PerceptualLoss(cfg, vgg=VGGFeatures("vgg16", ["relu1_2"]))
    with pytest.raises(RuntimeError, match="set_style"):
        loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="relu3_3"):
        PerceptualLoss(LossConfig(content_layers=["relu3_3"]),
                       vgg=VGGFeatures("vgg16", ["relu1_2"]))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gram_matrix_float32_under_autocast_and_no_feature_copy(layout):
    """One float32 GEMM also under bfloat16 autocast (which would otherwise run bmm in
    bfloat16), and float32 features of either layout are read in place: the only allocation is
    the (N, C, C) result."""
    from stylize_fast.bench.memory import peak_bytes

    f = torch.randn(2, 16, 9, 7) + 0.5
    if layout == "channels_last":
        f = f.contiguous(memory_format=torch.channels_last)
    expected = _gram_broadcast(f.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(f)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g.double(), expected, rtol=1e-5, atol=1e-6)
    result_bytes = 2 * 16 * 16 * 4  # a copy of f would add 8064 bytes, a second result 2048
    assert result_bytes <= peak_bytes(lambda: gram_matrix(f)) < 2 * result_bytes


def _eager_features(vgg, x):
    """Every layer of the VGG stack by hand with F.conv2d / F.relu / F.max_pool2d."""
    h = (x - vgg.mean.to(x.dtype)) / vgg.std.to(x.dtype)
    out = {}
    for name, module in zip(vgg.names, vgg.features):
        if name.startswith("conv"):
            h = torch.nn.functional.conv2d(h, module.weight, module.bias, padding=1)
        elif name.startswith("relu"):
            h = torch.relu(h)
        else:
            h = torch.nn.functional.max_pool2d(h, 2, 2)
        out[name] = h
    return out


def _examples_terms_by_hand(vgg, cfg, out, content, style):
    fo, fc, fs = _eager_features(vgg, out), _eager_features(vgg, content), \
        _eager_features(vgg, style)
    c = sum(((fo[k] - fc[k]) ** 2).mean() for k in cfg.content_layers)
    s = sum(((_gram_broadcast(fo[k]) - _gram_broadcast(fs[k])) ** 2).mean()
            for k in cfg.style_layers)
    return {"content": cfg.content_weight * c, "style": cfg.style_weight * s}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_perceptual_loss_on_package_kernels_matches_eager_by_hand(dtype):
    """The examples preset on the package-kernel network against the loss written out with
    eager ops; float64 with the C++ kernel forced (auto would pick F.conv2d there)."""
    import stylize_fast as sf

    cfg = loss_config("examples")
    loss = PerceptualLoss(cfg, vgg_weights="random", init_seed=4).to(dtype)
    assert loss.vgg.kernels == "package"
    gen = torch.Generator().manual_seed(0)
    style, content, out = ((torch.rand(n, 3, 36, 44, generator=gen) * 255).to(dtype)
                           for n in (1, 2, 2))
    with sf.backends.use("cpu") if dtype == torch.float64 else sf.config.override():
        loss.set_style(style)
        terms = loss(out, content)
    expected = _examples_terms_by_hand(loss.vgg, cfg, out, content, style)
    rtol = 1e-10 if dtype == torch.float64 else 1e-4
    for k in ("content", "style"):
        torch.testing.assert_close(terms[k].double(), expected[k].double(), rtol=rtol, atol=0)
    assert terms["tv"].item() == 0.0


@pytest.mark.parametrize("kernels", ["package", "eager"])
@pytest.mark.parametrize("preset,content_convs,style_convs,all_convs", [
    ("examples", 4, 10, 10), ("johnson", 7, 10, 10), ("ulyanov", 10, 9, 10)])
def test_content_pass_stops_at_deepest_content_layer(kernels, preset, content_convs, style_convs,
                                                     all_convs, monkeypatch):
    """The no-grad content pass runs the convs to the deepest content layer only, the output
    pass to the deepest of all layers; the style pass runs once, in set_style."""
    from stylize_fast.training import vgg as vgg_mod

    loss = PerceptualLoss(loss_config(preset), vgg_weights="random", kernels=kernels)
    calls = []  # grad mode of every conv run

    real = vgg_mod._conv_relu
    monkeypatch.setattr(vgg_mod, "_conv_relu",
                        lambda x, conv: calls.append(torch.is_grad_enabled()) or real(x, conv))
    for m in loss.vgg.features:
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda *args: calls.append(torch.is_grad_enabled()))
    loss.set_style(torch.rand(1, 3, 24, 24) * 255)
    assert calls == [False] * style_convs
    for _ in range(2):
        calls.clear()
        out = (torch.rand(2, 3, 24, 24) * 255).requires_grad_(True)
        loss(out, torch.rand(2, 3, 24, 24) * 255)["total"].backward()
        assert sorted(calls) == [False] * content_convs + [True] * all_convs
