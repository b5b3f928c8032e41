"""VGG loss network: layer layout, torchvision-format weight loading, hub cache, hash check,
offline error, normalisation inside the network."""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.error

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

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


# --------------------------------------------------------------------------------------------
# The package-kernel forward (padded_conv2d + ReLU in channels_last) against the eager modules.

_DEEP = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]


def _features_and_input_grad(net, x, upstream):
    """Features of every layer in ``upstream`` and d(sum <feature, upstream>)/dx."""
    x = x.detach().requires_grad_(True)
    feats = net(x)
    total = sum((feats[k] * upstream[k]).sum() for k in upstream)
    (grad,) = torch.autograd.grad(total, x)
    return {k: v.detach() for k, v in feats.items()}, grad


def _case(dtype, layout, arch="vgg16", layers=_DEEP, seed=11):
    net = VGGFeatures(arch, layers, init_seed=seed).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(2, 3, 37, 45, generator=gen) * 255).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        shapes = {k: v.shape for k, v in net(x).items()}
    upstream = {k: torch.randn(s, generator=gen).to(dtype) for k, s in shapes.items()}
    return net, x, upstream


def _compare(got, expected, rtol):
    # Relative to each tensor's largest magnitude: the deep layers' values span many decades.
    for k in expected:
        scale = expected[k].abs().max().item()
        torch.testing.assert_close(got[k].to(expected[k].dtype), expected[k], rtol=rtol, atol=rtol * scale,
                                   msg=lambda m, k=k: f"{k}: {m}")


def _masked_reference(net, x, upstream, gate):
    """float64 features and input gradient of ``net``'s layers with the ReLU masks and max-pool
    choices of ``gate`` (every layer's float32 output of the run under test). ReLU and max pool
    are not differentiable where an input sits at zero or two pool inputs tie; float32 rounding
    flips a few such decisions (and the input gradient near them) between any two kernels, so
    the kernels' arithmetic is compared with those decisions fixed."""
    x = x.detach().double().requires_grad_(True)
    h = (x - net.mean.double()) / net.std.double()
    feats, previous = {}, None
    for name, module in zip(net.names, net.features):
        if isinstance(module, torch.nn.Conv2d):
            h = F.conv2d(h, module.weight.double(), module.bias.double(), padding=1)
        elif isinstance(module, torch.nn.ReLU):
            h = h * (gate[name] > 0)
        else:
            _, idx = F.max_pool2d(gate[previous], 2, 2, return_indices=True)
            h = h.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)
        feats[name], previous = h, name
    total = sum((feats[k] * upstream[k].double()).sum() for k in upstream)
    (grad,) = torch.autograd.grad(total, x)
    return {k: feats[k].detach() for k in upstream}, grad


def _gate(net, x):
    with torch.no_grad():
        return net(x, layers=[n for n in net.names if not n.startswith("conv")])


@pytest.mark.parametrize("arch,layers,layout,backend", [
    ("vgg16", _DEEP, "contiguous", "auto"), ("vgg16", _DEEP, "channels_last", "auto"),
    ("vgg16", _DEEP, "contiguous", "cpu"), ("vgg16", _DEEP, "channels_last", "cpu"),
    ("vgg19", ["relu1_1", "relu4_2"], "channels_last", "auto")])
def test_package_kernels_match_eager_float32(arch, layers, layout, backend):
    """Features against the eager network directly; input gradients of both against the float64
    network with each run's own ReLU / pool decisions, to the same tolerance."""
    import stylize_fast as sf

    net, x, upstream = _case(torch.float32, layout, arch, layers)
    net.kernels = "eager"
    feats_ref, grad_eager = _features_and_input_grad(net, x, upstream)
    _, grad_eager64 = _masked_reference(net, x, upstream, _gate(net, x))
    net.kernels = "package"
    ctx = sf.backends.use("cpu") if backend == "cpu" else contextlib.nullcontext()
    with ctx:
        feats, grad = _features_and_input_grad(net, x, upstream)
        gate = _gate(net, x)
    _, grad64 = _masked_reference(net, x, upstream, gate)
    assert set(feats) == set(layers) and grad.shape == x.shape
    for v in feats.values():
        assert v.is_contiguous(memory_format=torch.channels_last)
    _compare(feats, feats_ref, 2e-5)
    _compare({"input": grad_eager}, {"input": grad_eager64}, 2e-5)
    _compare({"input": grad}, {"input": grad64}, 2e-5)


def test_package_kernels_match_eager_float64_tightly():
    """The C++ kernel forced (auto picks F.conv2d for float64), against the float64 eager
    network: equal to rounding."""
    import stylize_fast as sf

    net, x, upstream = _case(torch.float64, "contiguous")
    net.kernels = "eager"
    feats_ref, grad_ref = _features_and_input_grad(net, x, upstream)
    net.kernels = "package"
    with sf.backends.use("cpu"):
        feats, grad = _features_and_input_grad(net, x, upstream)
    _compare(feats, feats_ref, 1e-11)
    _compare({"input": grad}, {"input": grad_ref}, 1e-11)


def test_eager_path_keeps_input_layout_and_kernels_validated():
    net = VGGFeatures("vgg16", ["relu2_2"], kernels="eager")
    assert net.kernels == "eager" and "kernels='eager'" in repr(net)
    out = net(torch.rand(1, 3, 12, 10) * 255)["relu2_2"]
    assert out.is_contiguous() and not out.is_contiguous(memory_format=torch.channels_last)
    assert VGGFeatures("vgg16", ["relu1_1"]).kernels == "package"
    assert build_vgg("vgg16", ["relu1_1"], "random", kernels="eager").kernels == "eager"
    with pytest.raises(ValueError, match="kernels must be one of"):
        VGGFeatures("vgg16", ["relu1_1"], kernels="fast")
    with pytest.raises(ValueError, match="kernels must be one of"):
        net.kernels = "oneDNN"


class _OpSpy(TorchDispatchMode):
    """Records (op name, output_mask) of every convolution op below autograd."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if "conv" in name and "algorithm" not in name:
            # output_mask: the bool[3] argument (padded_conv2d_bwd has more after it).
            mask = (next(list(a) for a in args if isinstance(a, (list, tuple)) and len(a) == 3
                         and all(isinstance(v, bool) for v in a))
                    if "backward" in name or "bwd" in name else None)
            self.calls.append((name, mask))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["auto", "cpu"])
def test_frozen_weights_get_input_gradient_only(backend):
    """Every backward convolution is asked for the input gradient only (no weight or bias
    gradient is computed), on the package kernel's bwd op."""
    import stylize_fast as sf

    net, x, upstream = _case(torch.float32, "channels_last")
    ctx = sf.backends.use("cpu") if backend == "cpu" else contextlib.nullcontext()
    with ctx, _OpSpy() as spy:
        _features_and_input_grad(net, x, upstream)
    backward = [(n, m) for n, m in spy.calls if m is not None]
    package_bwd = [n for n, _ in backward if n == "stylize_fast.padded_conv2d_bwd"]
    assert len(backward) == 10  # one per conv up to relu4_3
    assert all(m == [True, False, False] for _, m in backward), backward
    # Forced: every conv is the package kernel; automatic: all but conv1_1 (3 input channels,
    # which the automatic choice gives to F.conv2d).
    assert len(package_bwd) == (10 if backend == "cpu" else 9)
    assert all(p.grad is None for p in net.parameters())


def test_fused_activation_path_when_available(monkeypatch):
    """With padded_conv2d(..., activation="relu") present the helper passes it and adds no
    separate ReLU; without it, an in-place ReLU follows. Both equal the eager network."""
    import stylize_fast.functional as sff

    real = sff.padded_conv2d
    calls = []

    def with_activation(*args, activation=None, **kwargs):
        calls.append(activation)
        out = real(*args, **kwargs)
        return torch.relu(out) if activation == "relu" else out

    net, x, upstream = _case(torch.float32, "channels_last", layers=["relu1_1", "relu2_2"])
    net.kernels = "eager"
    feats_ref, grad_ref = _features_and_input_grad(net, x, upstream)
    net.kernels = "package"
    for fused in (True, False):
        calls.clear()
        monkeypatch.setattr(vgg_mod, "_FUSED_RELU", fused)
        monkeypatch.setattr(sff, "padded_conv2d", with_activation)
        feats, grad = _features_and_input_grad(net, x, upstream)
        assert calls == ["relu" if fused else None] * 4
        _compare(feats, feats_ref, 2e-5)
        _compare({"input": grad}, {"input": grad_ref}, 2e-5)
    monkeypatch.undo()
    assert vgg_mod._FUSED_RELU == vgg_mod._has_fused_activation()


@pytest.mark.parametrize("kernels", ["package", "eager"])
def test_forward_layers_runs_only_as_deep_as_asked(kernels, monkeypatch):
    net = VGGFeatures("vgg16", _DEEP, init_seed=2, kernels=kernels)
    x = torch.rand(2, 3, 20, 18) * 255
    full = net(x)
    convs = []
    if kernels == "package":
        real = vgg_mod._conv_relu
        monkeypatch.setattr(vgg_mod, "_conv_relu", lambda x, conv: convs.append(1) or real(x, conv))
    else:
        for m in net.features:
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(lambda *a: convs.append(1))
    part = net(x, layers=["relu1_2", "relu2_2"])
    assert set(part) == {"relu1_2", "relu2_2"} and len(convs) == 4
    for k in part:
        torch.testing.assert_close(part[k], full[k], rtol=0, atol=0)
    convs.clear()
    assert set(net(x)) == set(_DEEP) and len(convs) == 10
    with pytest.raises(ValueError, match="relu5_1"):
        net(x, layers=["relu5_1"])
    with pytest.raises(ValueError, match="none given"):
        net(x, layers=[])


def test_bfloat16_autocast_runs_the_network_in_bfloat16():
    """Under bfloat16 autocast the package network computes in bfloat16; its error against the
    float32 network is no more than about twice that of the eager network under autocast."""
    net, x, upstream = _case(torch.float32, "channels_last", layers=["relu1_2", "relu2_2"])
    feats32, grad32 = _features_and_input_grad(net, x, upstream)
    errors = {}
    for kernels in ("eager", "package"):
        net.kernels = kernels
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats, grad = _features_and_input_grad(net, x, upstream)
        assert all(v.dtype == torch.bfloat16 for v in feats.values())
        errors[kernels] = [((feats[k].float() - feats32[k]).norm() / feats32[k].norm()).item()
                           for k in feats32]
        errors[kernels].append(((grad.float() - grad32).norm() / grad32.norm()).item())
    for got, ref in zip(errors["package"], errors["eager"]):
        assert got <= 2 * ref + 1e-3, errors
