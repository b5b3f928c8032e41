"""VGG loss network: layer layout, torchvision-format weight loading, hub cache, hash check,
offline error, normalisation inside the network."""

from __future__ import annotations

import hashlib
import os
import urllib.error

import pytest
import torch
import torch.nn.functional as F

from stylize_fast.training import vgg as vgg_mod
from stylize_fast.training.vgg import VGGFeatures, build_vgg, layer_names, locate_weights


def _write_torchvision_file(path, arch="vgg16", deepest="relu2_2", seed=1):
    """A torchvision-format state dict (features.N.* plus a classifier key) with random values."""
    net = VGGFeatures(arch, [deepest], init_seed=seed)
    state = {f"features.{k}": v.clone() for k, v in net.features.state_dict().items()}
    state["classifier.0.weight"] = torch.randn(4, 3)
    torch.save(state, path)
    return state


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_layer_indices_match_torchvision():
    n16, n19 = layer_names("vgg16"), layer_names("vgg19")
    # torchvision indices used by the published setups (examples: 3, 8, 15, 22).
    assert [n16.index(x) for x in ("relu1_2", "relu2_2", "relu3_3", "relu4_3")] == [3, 8, 15, 22]
    assert [n19.index(x) for x in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2")] == \
        [1, 6, 11, 20, 22]
    assert len(n16) == 31 and len(n19) == 37


def test_truncated_after_deepest_layer_and_unknown_layer_rejected():
    net = VGGFeatures("vgg16", ["relu2_2", "relu1_1"])
    assert len(net.features) == 9  # up to and including relu2_2
    out = net(torch.rand(1, 3, 16, 16) * 255)
    assert set(out) == {"relu1_1", "relu2_2"} and out["relu2_2"].shape == (1, 128, 8, 8)
    with pytest.raises(ValueError, match="relu9_9"):
        VGGFeatures("vgg16", ["relu9_9"])
    with pytest.raises(ValueError, match="vgg16"):
        VGGFeatures("vgg11", ["relu1_1"])


def test_random_init_is_labelled_and_reproducible():
    a = VGGFeatures("vgg16", ["relu1_2"], init_seed=3)
    b = VGGFeatures("vgg16", ["relu1_2"], init_seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.source.is_random and "UNTRAINED" in a.source.label
    assert build_vgg("vgg16", ["relu1_1"], "random").source.is_random
    assert not any(p.requires_grad for p in a.parameters())


def test_load_torchvision_file_and_normalisation(tmp_path):
    path = tmp_path / "weights.pth"
    state = _write_torchvision_file(path, deepest="relu2_2")
    net = build_vgg("vgg16", ["relu1_1", "relu2_2"], str(path))
    assert net.source.kind == "file" and str(path) in net.source.label
    for k, v in net.features.state_dict().items():
        assert torch.equal(v, state[f"features.{k}"])
    # relu1_1 by hand: ImageNet normalisation of 0-255 RGB, conv 3x3 pad 1, ReLU.
    x = torch.rand(2, 3, 10, 12, dtype=torch.float64) * 255
    # The network holds 255*mean and 255*std as float32 constants.
    mean = (255 * torch.tensor([0.485, 0.456, 0.406])).double().view(1, 3, 1, 1)
    std = (255 * torch.tensor([0.229, 0.224, 0.225])).double().view(1, 3, 1, 1)
    expected = F.relu(F.conv2d((x - mean) / std, state["features.0.weight"].double(),
                               state["features.0.bias"].double(), padding=1))
    got = net.double()(x)["relu1_1"]
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_weight_file_missing_keys_or_wrong_shapes(tmp_path):
    path = tmp_path / "short.pth"
    _write_torchvision_file(path, deepest="relu1_2")
    with pytest.raises(ValueError, match="features.5.weight"):
        build_vgg("vgg16", ["relu2_2"], str(path))
    state = torch.load(path, weights_only=True)
    state["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"features.0.weight has shape \(64, 3, 5, 5\)"):
        build_vgg("vgg16", ["relu1_1"], str(path))
    with pytest.raises(FileNotFoundError, match="--vgg-weights"):
        build_vgg("vgg16", ["relu1_1"], str(tmp_path / "nope.pth"))


def _no_download(*args, **kwargs):
    raise AssertionError("must not download")


def test_hub_cache_lookup_with_temporary_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    cache = tmp_path / "th" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    staging = tmp_path / "staging.pth"
    state = _write_torchvision_file(staging, deepest="relu1_2", seed=7)
    prefix = _sha256(staging)[:8]
    name = f"vgg16-{prefix}.pth"  # a name whose hash prefix matches this file
    os.replace(staging, cache / name)
    monkeypatch.setitem(vgg_mod.WEIGHT_FILES, "vgg16", (name, "https://example.invalid/" + name))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    net = build_vgg("vgg16", ["relu1_2"])
    assert net.source.kind == "hub-cache" and net.source.path == str(cache / name)
    assert torch.equal(net.features[0].weight, state["features.0.weight"])


def test_hash_check_rejects_wrong_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    _write_torchvision_file(cache / "vgg16-397923af.pth")  # right name, wrong content
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    with pytest.raises(RuntimeError, match=r"SHA-256 .*397923af.*Delete it") as err:
        locate_weights("vgg16")
    assert str(cache / "vgg16-397923af.pth") in str(err.value)


def test_offline_error_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))

    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    for arch, name in (("vgg16", "vgg16-397923af.pth"), ("vgg19", "vgg19-dcbb9e9d.pth")):
        with pytest.raises(RuntimeError) as err:
            locate_weights(arch)
        message = str(err.value)
        assert f"https://download.pytorch.org/models/{name}" in message
        assert str(tmp_path / "home" / "hub" / "checkpoints" / name) in message
        assert "--vgg-weights" in message


def test_download_passes_hash_prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        _write_torchvision_file(dst, arch="vgg19", deepest="relu1_1")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    source = locate_weights("vgg19")
    assert calls == [("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "dcbb9e9d")]
    assert source.kind == "download" and os.path.isfile(source.path)
