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


def test_gram_gradcheck():
    f = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gram_matrix, (f,))


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
