"""sf.FusedInstanceNorm2d is a drop-in nn.InstanceNorm2d: arguments, state_dict, train/eval,
running statistics, unbatched input; and sf.fuse's instance-norm pass."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import stylize_fast as sf
from stylize_fast.testing import assert_close, make_input, tolerance

ACT = {None: nn.Identity(), "relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.2)}


def _pair(affine=True, track=False, momentum=0.1, activation="relu", bias=True, c=4):
    torch.manual_seed(3)
    ref = nn.InstanceNorm2d(c, eps=1e-4, momentum=momentum, affine=affine,
                            track_running_stats=track, bias=bias)
    if ref.weight is not None:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            if ref.bias is not None:
                ref.bias.normal_()
    fused = sf.FusedInstanceNorm2d(c, eps=1e-4, momentum=momentum, affine=affine,
                                   track_running_stats=track, bias=bias, activation=activation,
                                   negative_slope=0.2)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_matches_instance_norm_plus_activation(affine, activation, layout):
    ref, fused = _pair(affine=affine, activation=activation)
    x = make_input((2, 4, 9, 7), layout=layout, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y_ref = fused(x), ACT[activation](ref(x2))
    assert_close(y, y_ref, **tolerance(torch.float32))
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    assert_close(x.grad, x2.grad, **tolerance(torch.float32, 10))
    if affine:
        assert_close(fused.weight.grad, ref.weight.grad, **tolerance(torch.float32, 100))
        assert_close(fused.bias.grad, ref.bias.grad, **tolerance(torch.float32, 100))


def test_same_constructor_defaults_and_state_dict_keys():
    for kwargs in ({}, {"affine": True}, {"track_running_stats": True},
                   {"affine": True, "track_running_stats": True}, {"affine": True, "bias": False}):
        ref, fused = nn.InstanceNorm2d(6, **kwargs), sf.FusedInstanceNorm2d(6, **kwargs)
        assert list(ref.state_dict()) == list(fused.state_dict()), kwargs
        for key, value in ref.state_dict().items():
            assert torch.equal(value, fused.state_dict()[key]), key
        assert (ref.eps, ref.momentum, ref.affine, ref.track_running_stats) == \
            (fused.eps, fused.momentum, fused.affine, fused.track_running_stats)
    # positional order is nn.InstanceNorm2d's
    m = sf.FusedInstanceNorm2d(3, 1e-3, 0.3, True, True)
    assert (m.eps, m.momentum, m.affine, m.track_running_stats) == (1e-3, 0.3, True, True)
    assert isinstance(m, nn.InstanceNorm2d)


def test_load_state_dict_both_ways():
    ref, fused = _pair(affine=True, track=True)
    fused2 = sf.FusedInstanceNorm2d(4, affine=True, track_running_stats=True)
    fused2.load_state_dict(ref.state_dict())
    ref2 = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    ref2.load_state_dict(fused.state_dict())
    for key in ref.state_dict():
        assert torch.equal(ref2.state_dict()[key], fused2.state_dict()[key])


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_running_stats_train_then_eval(momentum):
    ref, fused = _pair(affine=True, track=True, momentum=momentum, activation=None)
    for step in range(3):
        x = make_input((3, 4, 6, 5), mean=step, std=1 + step)
        assert_close(fused(x), ref(x), **tolerance(torch.float32))
    assert_close(fused.running_mean, ref.running_mean, atol=1e-6, rtol=1e-5, name="running_mean")
    assert_close(fused.running_var, ref.running_var, atol=1e-6, rtol=1e-5, name="running_var")
    ref.eval()
    fused.eval()
    x = make_input((2, 4, 5, 5))
    assert_close(fused(x), ref(x), **tolerance(torch.float32))


def test_eval_without_running_stats_uses_input_statistics():
    ref, fused = _pair(affine=True, activation=None)
    ref.eval()
    fused.eval()
    x = make_input((2, 4, 5, 6))
    assert_close(fused(x), ref(x), **tolerance(torch.float32))


def test_unbatched_input():
    ref, fused = _pair(activation="relu")
    x = make_input((4, 7, 5))
    y = fused(x)
    assert y.shape == (4, 7, 5)
    assert_close(y, torch.relu(ref(x)), **tolerance(torch.float32))


def test_input_checks_match_instance_norm():
    fused = sf.FusedInstanceNorm2d(4, affine=True)
    with pytest.raises(ValueError, match="expected 3D or 4D input"):
        fused(torch.randn(4, 5))
    with pytest.raises(ValueError, match="num_features"):
        fused(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        fused(torch.randn(2, 4, 1, 1))
    plain = sf.FusedInstanceNorm2d(4)
    with pytest.warns(UserWarning, match="does not match num_features"):
        plain(torch.randn(2, 3, 5, 5))


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_features=0), "num_features must be a positive int"),
    (dict(num_features=4, activation="tanh"), "activation must be None"),
    (dict(num_features=4, eps=-1.0), "eps must be a non-negative"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sf.FusedInstanceNorm2d(**kwargs)


def test_repr_names_activation():
    assert "activation='leaky_relu', negative_slope=0.2" in repr(
        sf.FusedInstanceNorm2d(3, activation="leaky_relu", negative_slope=0.2))


def test_dtype_and_device_arguments():
    m = sf.FusedInstanceNorm2d(3, affine=True, dtype=torch.float64)
    assert m.weight.dtype == torch.float64
    y = m(make_input((1, 3, 4, 4), torch.float64))
    assert y.dtype == torch.float64


def test_fuse_sequential_folds_relu_and_keeps_keys():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8, affine=True), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.InstanceNorm2d(8, affine=True),
        nn.LeakyReLU(0.3), nn.InstanceNorm2d(8), nn.Sigmoid())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.InstanceNorm2d) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    fused = sf.fuse(model)
    assert fused is not model and type(model[1]) is nn.InstanceNorm2d  # not inplace
    assert isinstance(fused[1], sf.FusedInstanceNorm2d) and fused[1].activation == "relu"
    assert isinstance(fused[2], nn.Identity)
    assert fused[4].activation == "leaky_relu" and fused[4].negative_slope == 0.3
    assert fused[6].activation is None  # followed by Sigmoid: nothing folded
    assert list(fused.state_dict()) == list(model.state_dict())
    x = make_input((2, 3, 11, 9))
    assert_close(fused(x), model(x), **tolerance(torch.float32, 4))


def test_fuse_inplace_and_nested():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.InstanceNorm2d(3, affine=True)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.norm(x)) + x

    model = nn.Sequential(Block(), Block())
    x = make_input((1, 3, 6, 6))
    expected = model(x)
    same = sf.fuse(model, inplace=True)
    assert same is model
    assert isinstance(model[0].norm, sf.FusedInstanceNorm2d)
    assert_close(model(x), expected, **tolerance(torch.float32))


def test_fuse_rejects_non_module():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        sf.fuse(lambda x: x)


def test_deepcopy_and_pickle_roundtrip(tmp_path):
    m = sf.FusedInstanceNorm2d(3, affine=True, activation="relu")
    m2 = copy.deepcopy(m)
    assert m2.activation == "relu"
    torch.save(m.state_dict(), tmp_path / "m.pt")
    m3 = sf.FusedInstanceNorm2d(3, affine=True, activation="relu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m3.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))


class _ExamplesLikeNet(nn.Module):
    """The PyTorch examples' pattern: one shared ReLU module applied after several norms."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.in1 = nn.InstanceNorm2d(6, affine=True)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.in2 = nn.InstanceNorm2d(6, affine=True)
        self.in3 = nn.InstanceNorm2d(6, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        return self.in3(y) + y  # in3 feeds an add, not the ReLU


def test_fuse_traced_shared_relu_is_folded():
    torch.manual_seed(0)
    model = _ExamplesLikeNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.bias.normal_()
    fused = sf.fuse(model)
    assert fused.in1.activation == "relu" and fused.in2.activation == "relu"
    assert fused.in3.activation is None and isinstance(fused.in3, sf.FusedInstanceNorm2d)
    assert isinstance(fused.relu, nn.Identity)
    assert list(fused.state_dict()) == list(model.state_dict())
    x = make_input((2, 3, 7, 9))
    assert_close(fused(x), model(x), **tolerance(torch.float32, 4))


def test_fuse_keeps_relu_used_elsewhere():
    class Net(_ExamplesLikeNet):
        def forward(self, x):
            return self.relu(self.in1(self.conv1(x))) + self.relu(x).mean()

    model = Net()
    fused = sf.fuse(model)
    assert isinstance(fused.relu, nn.ReLU) and fused.in1.activation is None
    x = make_input((1, 3, 5, 5))
    assert_close(fused(x), model(x), **tolerance(torch.float32, 4))
