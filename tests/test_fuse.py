"""sf.fuse: instance norm (+ activation) and padding + convolution rewrites, outputs unchanged,
state_dict keys unchanged; includes the PyTorch examples' fast_neural_style TransformerNet
(re-typed here from its published structure)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import stylize_fast as sf
from stylize_fast.testing import assert_close, make_input, tolerance

# ---------------------------------------------------------------------------------------------
# fast_neural_style's TransformerNet (pytorch/examples), same module names and forward.


class ConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        out = self.reflection_pad(x)
        return self.conv2d(out)


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        return out + residual


class UpsampleConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        if self.upsample:
            x = nn.functional.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class TransformerNet(nn.Module):
    def __init__(self, width=1):
        super().__init__()
        c1, c2, c3 = 32 // width, 64 // width, 128 // width
        self.conv1 = ConvLayer(3, c1, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(c1, affine=True)
        self.conv2 = ConvLayer(c1, c2, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(c2, affine=True)
        self.conv3 = ConvLayer(c2, c3, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(c3, affine=True)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (ResidualBlock(c3)
                                                                 for _ in range(5))
        self.deconv1 = UpsampleConvLayer(c3, c2, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(c2, affine=True)
        self.deconv2 = UpsampleConvLayer(c2, c1, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(c1, affine=True)
        self.deconv3 = ConvLayer(c1, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, X):
        y = self.relu(self.in1(self.conv1(X)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


def _randomise_norms(model):
    # Fresh affine norms are identity maps; random ones make the comparison meaningful.
    g = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, nn.InstanceNorm2d) and m.affine:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def test_transformer_net():
    torch.manual_seed(0)
    model = TransformerNet(width=4).eval()
    _randomise_norms(model)
    fused = sf.fuse(model)
    assert fused is not model and list(fused.state_dict()) == list(model.state_dict())
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in model.parameters())
    convs = [m for m in fused.modules() if isinstance(m, (ConvLayer, UpsampleConvLayer))]
    assert len(convs) == 16  # 3 down, 5 x 2 residual, 2 upsampling, 1 output
    for m in convs:
        assert type(m.reflection_pad) is nn.Identity
        assert type(m.conv2d) is sf.PaddedConv2d and m.conv2d.padding_mode == "reflect"
        assert m.conv2d.padding == (m.conv2d.kernel_size[0] // 2,) * 2
    # The upsampling layers fold their interpolate into the convolution.
    for name in ("deconv1", "deconv2"):
        layer = getattr(fused, name)
        assert layer.upsample is None and layer.conv2d.upsample == 2
        assert getattr(model, name).upsample == 2
    assert all(m.conv2d.upsample == 1 for m in convs if isinstance(m, ConvLayer))
    assert not any(type(m) is nn.InstanceNorm2d for m in fused.modules())
    # The original is untouched.
    assert type(model.conv1.reflection_pad) is nn.ReflectionPad2d
    x = make_input((1, 3, 36, 28), mean=0.0, std=1.0)
    with torch.no_grad():
        assert_close(fused(x), model(x), **tolerance(torch.float32, 20.0))
    fused.load_state_dict(model.state_dict())  # keys and shapes interchangeable


def test_transformer_net_channels_last_and_grad():
    torch.manual_seed(1)
    model = TransformerNet(width=8)
    _randomise_norms(model)
    fused = sf.fuse(model)
    x = make_input((2, 3, 20, 24), layout="channels_last", mean=0.0, std=1.0)
    y, y_ref = fused(x), model(x)
    assert_close(y, y_ref, **tolerance(torch.float32, 20.0))
    g = torch.autograd.grad(y.square().sum(), fused.conv1.conv2d.weight)[0]
    g_ref = torch.autograd.grad(y_ref.square().sum(), model.conv1.conv2d.weight)[0]
    assert_close(g, g_ref, atol=1e-3, rtol=1e-3, name="grad conv1.weight")


@pytest.mark.parametrize("pad_cls,mode", [(nn.ReflectionPad2d, "reflect"),
                                          (nn.ReplicationPad2d, "replicate")])
def test_sequential_pad_conv_pair(pad_cls, mode):
    torch.manual_seed(2)
    model = nn.Sequential(pad_cls((2, 2, 1, 1)), nn.Conv2d(3, 4, (3, 5), stride=2), nn.ReLU(),
                          pad_cls(1), nn.Conv2d(4, 2, 3, bias=False))
    fused = sf.fuse(model)
    assert [type(m) for m in fused] == [nn.Identity, sf.PaddedConv2d, nn.ReLU, nn.Identity,
                                        sf.PaddedConv2d]
    assert fused[1].padding == (1, 2) and fused[1].padding_mode == mode
    assert fused[4].bias is None
    assert list(fused.state_dict()) == list(model.state_dict())
    x = make_input((2, 3, 9, 10))
    assert_close(fused(x), model(x), **tolerance(torch.float32))


def test_pairs_that_must_stay():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.ReflectionPad2d((1, 2, 1, 1)), nn.Conv2d(3, 3, 3),                # asymmetric pad
        nn.ReflectionPad2d(1), nn.Conv2d(3, 3, 3, padding=1),                # conv pads zeros too
        nn.ReflectionPad2d(1), nn.Conv2d(3, 3, 3, groups=3),                 # groups
        nn.Conv2d(3, 3, 3, dilation=2, padding=2, padding_mode="reflect"),   # dilation
        nn.Conv2d(3, 3, 3, padding="same", padding_mode="reflect"),          # string padding
        nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular"),              # circular
        nn.ConstantPad2d(1, 0.5), nn.Conv2d(3, 3, 3),                        # not reflect/replicate
    )
    fused = sf.fuse(model)
    kinds = [type(m).__name__ for m in fused]
    assert kinds == ["ReflectionPad2d", "PaddedConv2d", "ReflectionPad2d", "PaddedConv2d",
                     "ReflectionPad2d", "Conv2d", "Conv2d", "Conv2d", "Conv2d",
                     "ConstantPad2d", "PaddedConv2d"]
    # A conv that was not paired still becomes a PaddedConv2d with its own zero padding.
    assert fused[3].padding_mode == "zeros" and fused[3].padding == (1, 1)
    x = make_input((1, 3, 12, 11))
    assert_close(fused(x), model(x), **tolerance(torch.float32, 10.0))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "zeros"])
def test_conv_with_padding_mode(mode):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=(1, 2), padding_mode=mode))
    fused = sf.fuse(model)
    assert type(fused[0]) is sf.PaddedConv2d and fused[0].padding_mode == mode
    assert fused[0].stride == (2, 2) and fused[0].padding == (1, 2)
    x = make_input((2, 3, 7, 8))
    assert_close(fused(x), model(x), **tolerance(torch.float32))


def test_upsample_fold_requires_the_examples_forward():
    """Only an upsampling the layer's own ``upsample`` attribute switches off is folded: one
    that interpolates whatever the attribute, or bilinearly, keeps its interpolate."""
    class Always(UpsampleConvLayer):
        def forward(self, x):
            x = nn.functional.interpolate(x, mode="nearest", scale_factor=2)
            return self.conv2d(self.reflection_pad(x))

    class Bilinear(UpsampleConvLayer):
        def forward(self, x):
            if self.upsample:
                x = nn.functional.interpolate(x, mode="bilinear", scale_factor=self.upsample)
            return self.conv2d(self.reflection_pad(x))

    x = make_input((1, 4, 6, 5), mean=0.0, std=1.0)
    for cls in (Always, Bilinear, UpsampleConvLayer):
        torch.manual_seed(0)
        model = nn.Sequential(cls(4, 3, 3, 1, upsample=2))
        fused = sf.fuse(model)
        folded = cls is UpsampleConvLayer
        assert (fused[0].conv2d.upsample == 2) is folded and (fused[0].upsample is None) is folded
        assert type(fused[0].reflection_pad) is nn.Identity  # the pad is fused either way
        with torch.no_grad():
            assert_close(fused(x), model(x), **tolerance(torch.float32, 4.0))


def test_conv_layer_pattern_requires_the_exact_forward():
    class Other(nn.Module):
        # Same attribute names, but the pad's output is used twice: must not be rewritten.
        def __init__(self):
            super().__init__()
            self.reflection_pad = nn.ReflectionPad2d(1)
            self.conv2d = nn.Conv2d(3, 3, 3)

        def forward(self, x):
            p = self.reflection_pad(x)
            return self.conv2d(p) + p[:, :, 1:-1, 1:-1]

    torch.manual_seed(5)
    model = Other()
    fused = sf.fuse(model)
    assert type(fused.reflection_pad) is nn.ReflectionPad2d
    assert type(fused.conv2d) is sf.PaddedConv2d and fused.conv2d.padding == (0, 0)
    x = make_input((1, 3, 8, 8))
    assert_close(fused(x), model(x), **tolerance(torch.float32))


def test_instance_norm_pass_and_inplace():
    torch.manual_seed(6)
    model = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3),
                          nn.InstanceNorm2d(4, affine=True), nn.ReLU(),
                          nn.ReplicationPad2d(1), nn.Conv2d(4, 4, 3),
                          nn.InstanceNorm2d(4), nn.LeakyReLU(0.2))
    _randomise_norms(model)
    x = make_input((2, 3, 8, 9))
    with torch.no_grad():
        expected = model(x)
    fused = sf.fuse(model, inplace=True)
    assert fused is model
    assert [type(m).__name__ for m in fused] == [
        "Identity", "PaddedConv2d", "FusedInstanceNorm2d", "Identity",
        "Identity", "PaddedConv2d", "FusedInstanceNorm2d", "Identity"]
    assert fused[2].activation == "relu" and fused[6].activation == "leaky_relu"
    with torch.no_grad():
        assert_close(fused(x), expected, **tolerance(torch.float32, 10.0))


def test_fuse_rejects_non_modules():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        sf.fuse(lambda x: x)
