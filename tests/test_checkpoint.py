"""Checkpoints: our format round-trips; the PyTorch examples' fast_neural_style models load
(bare state_dict, pre-0.4 running-stat keys, DataParallel prefix) and give the same outputs as
an independent plain-PyTorch reimplementation of the examples' TransformerNet."""

import os
import pickle
import re

import pytest
import torch
from torch import nn

import stylize_fast as sf
from stylize_fast.models import JohnsonNet, TextureNet, load, load_checkpoint, save
from stylize_fast.testing import assert_close

# Until nn/padded_conv.py lands, norm="fused" warns that it uses nn.Conv2d for the padding.
pytestmark = pytest.mark.filterwarnings("ignore:.*PaddedConv2d is not available")


# --- the PyTorch examples' TransformerNet, rewritten here as an independent reference -------------

class _RefConvLayer(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        self.conv2d = nn.Conv2d(cin, cout, k, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class _RefResidualBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = _RefConvLayer(c, c, 3, 1)
        self.in1 = nn.InstanceNorm2d(c, affine=True)
        self.conv2 = _RefConvLayer(c, c, 3, 1)
        self.in2 = nn.InstanceNorm2d(c, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class _RefUpsampleConvLayer(nn.Module):
    def __init__(self, cin, cout, k, upsample):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        self.conv2d = nn.Conv2d(cin, cout, k, 1)

    def forward(self, x):
        x = nn.functional.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class TransformerNetReference(nn.Module):
    """The examples' architecture, widths scaled by ``c`` (32 in the examples)."""

    def __init__(self, c=32, residual=5):
        super().__init__()
        self.conv1 = _RefConvLayer(3, c, 9, 1)
        self.in1 = nn.InstanceNorm2d(c, affine=True)
        self.conv2 = _RefConvLayer(c, 2 * c, 3, 2)
        self.in2 = nn.InstanceNorm2d(2 * c, affine=True)
        self.conv3 = _RefConvLayer(2 * c, 4 * c, 3, 2)
        self.in3 = nn.InstanceNorm2d(4 * c, affine=True)
        self.residual = residual
        for i in range(1, residual + 1):
            setattr(self, f"res{i}", _RefResidualBlock(4 * c))
        self.deconv1 = _RefUpsampleConvLayer(4 * c, 2 * c, 3, 2)
        self.in4 = nn.InstanceNorm2d(2 * c, affine=True)
        self.deconv2 = _RefUpsampleConvLayer(2 * c, c, 3, 2)
        self.in5 = nn.InstanceNorm2d(c, affine=True)
        self.deconv3 = _RefConvLayer(c, 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        for i in range(1, self.residual + 1):
            y = getattr(self, f"res{i}")(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


def randomized(model: nn.Module) -> nn.Module:
    """Non-trivial affine norm parameters (the defaults 1 / 0 would hide swapped keys)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if re.search(r"(^|\.)in\d+\.(weight|bias)$", name):
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("weight") else 0.1))
    return model.eval()


def legacy_state_dict(model: nn.Module) -> dict:
    """What pre-0.4 PyTorch saved: InstanceNorm2d tracked running stats by default."""
    state = dict(model.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, nn.InstanceNorm2d):
            state[f"{name}.running_mean"] = torch.randn(module.num_features)
            state[f"{name}.running_var"] = torch.rand(module.num_features) + 0.5
    return state


# --- tests ----------------------------------------------------------------------------------------

def test_examples_key_layout_matches_default_johnson():
    reference = TransformerNetReference()
    ours = JohnsonNet("instance")
    assert {k: tuple(v.shape) for k, v in reference.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(reference.state_dict()) == list(ours.state_dict())  # same order too


@pytest.mark.parametrize("variant", ["plain", "legacy", "module_prefix", "legacy_module_prefix"])
@pytest.mark.parametrize("norm", [None, "instance"])
def test_load_examples_model_gives_reference_output(tmp_path, variant, norm):
    reference = randomized(TransformerNetReference(c=4, residual=2))
    state = legacy_state_dict(reference) if "legacy" in variant else reference.state_dict()
    if "module_prefix" in variant:
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "examples.pth"
    torch.save(state, path)

    model = load(path, norm=norm)
    assert isinstance(model, JohnsonNet) and not model.training
    assert model.norm == (norm or "fused")
    assert model.options["channels"] == 4 and model.options["num_residual"] == 2
    x = torch.rand(2, 3, 20, 28) * 255
    with torch.no_grad():
        expected = reference(x)
        actual = model(x)
    assert_close(actual, expected, atol=2e-3, rtol=1e-4)


def test_full_size_examples_model_loads(tmp_path):
    reference = randomized(TransformerNetReference())
    torch.save(legacy_state_dict(reference), tmp_path / "udnie.pth")
    model = load(tmp_path / "udnie.pth")
    assert sum(p.numel() for p in model.parameters()) == 1_679_235
    x = torch.rand(1, 3, 16, 24) * 255
    with torch.no_grad():
        assert_close(model(x), reference(x), atol=5e-3, rtol=1e-4)


@pytest.mark.parametrize("arch", ["johnson", "texture"])
@pytest.mark.parametrize("norm", ["instance", "fused", "batch"])
def test_own_checkpoint_round_trip(tmp_path, arch, norm):
    if arch == "johnson":
        model = JohnsonNet(norm, channels=4, num_residual=1, padding_mode="replicate",
                           upsample="transpose", final_kernel=3, tanh_scale=150.0)
    else:
        model = TextureNet(norm, branch_channels=3, num_scales=3, noise_channels=0,
                           activation="leaky_relu", negative_slope=0.2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, b in model.named_buffers():
            if "running" in name:
                b.copy_(torch.rand_like(b) + 0.5)
    model.eval()
    path = tmp_path / "sub" / "model.pth"
    save(model, path, style="starry.jpg", iterations=123, losses=[1.5, 2.5])
    assert sorted(os.listdir(path.parent)) == ["model.pth"]  # no temp file left behind

    raw = torch.load(path, weights_only=True)
    assert raw["arch"] == type(model).__name__ and raw["options"] == model.options
    assert raw["versions"]["torch"] == torch.__version__
    assert raw["versions"]["stylize_fast"] == sf.__version__

    ckpt = load_checkpoint(path)
    assert ckpt["metadata"] == {"style": "starry.jpg", "iterations": 123, "losses": [1.5, 2.5]}
    loaded = load(path)
    assert type(loaded) is type(model) and loaded.options == model.options
    x = torch.rand(1, 3, 20, 24) * 255
    with torch.no_grad():
        assert_close(loaded(x), model(x), atol=1e-4, rtol=1e-5)
    if norm != "batch":
        other = "instance" if norm == "fused" else "fused"
        with torch.no_grad():
            assert_close(load(path, norm=other)(x), model(x), atol=2e-3, rtol=1e-4)
    else:
        with pytest.raises(ValueError, match="batch"):
            load(path, norm="instance")


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "m.pth"
    save(JohnsonNet("instance", channels=2, num_residual=0), path)
    second = JohnsonNet("instance", channels=3, num_residual=0)
    save(second, path)
    assert load(path).options["channels"] == 3
    assert os.listdir(tmp_path) == ["m.pth"]


def test_save_unwraps_data_parallel(tmp_path):
    model = JohnsonNet("instance", channels=2, num_residual=0)
    save(nn.DataParallel(model), tmp_path / "m.pth")
    assert list(load(tmp_path / "m.pth").state_dict()) == list(model.state_dict())


def test_save_rejects_other_models(tmp_path):
    with pytest.raises(TypeError, match="JohnsonNet"):
        save(nn.Conv2d(1, 1, 1), tmp_path / "x.pth")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("kind", ["random_keys", "list", "text", "pickle_object", "shape_mismatch"])
def test_other_files_get_clear_errors(tmp_path, kind):
    path = tmp_path / "bad.pth"
    if kind == "random_keys":
        torch.save({"encoder.weight": torch.zeros(2), "decoder.bias": torch.zeros(2)}, path)
        match = "found a dict with 2 keys.*encoder.weight"
    elif kind == "list":
        torch.save([torch.zeros(1)], path)
        match = "found an object of type list"
    elif kind == "text":
        path.write_text("hello")
        match = "not a loadable model file"
    elif kind == "pickle_object":
        with open(path, "wb") as f:
            pickle.dump({"x": _Evil()}, f, protocol=2)
        match = "not a loadable model file"  # weights_only refuses to run the payload
    else:
        state = TransformerNetReference(c=4, residual=2).state_dict()
        state["in1.weight"] = torch.zeros(5)
        torch.save(state, path)
        match = "weights do not fit"
    with pytest.raises(ValueError, match=match):
        load(path)


def test_checkpoint_with_unknown_options(tmp_path):
    path = tmp_path / "future.pth"
    save(JohnsonNet("instance", channels=2, num_residual=0), path)
    raw = torch.load(path, weights_only=True)
    raw["options"]["attention"] = True  # an option a later version might add
    torch.save(raw, path)
    with pytest.raises(ValueError, match="recorded options"):
        load(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load("/nonexistent/nope.pth")
