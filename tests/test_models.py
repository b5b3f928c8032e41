"""Generators: parameter counts, key layouts, variants, and fused == plain on the same weights
(odd sizes, channels_last, non-contiguous input, float64; forward and gradients)."""

import pytest
import torch
from torch import nn

import stylize_fast as sf
from stylize_fast.models import JohnsonNet, TextureNet, to_plain
from stylize_fast.testing import assert_close, make_input

pytestmark = pytest.mark.filterwarnings("ignore:.*PaddedConv2d is not available")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def perturbed(model: nn.Module, scale: float = 0.2) -> nn.Module:
    """Random affine norm parameters, so that swapped or ignored weights show up."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "conv" not in name and "final" not in name:
                p.copy_(torch.randn_like(p) * scale + (1.0 if name.endswith("weight") else 0.0))
    return model.eval()


def same_weights(model: nn.Module, norm: str) -> nn.Module:
    other = type(model)(norm, **{k: v for k, v in model.options.items() if k != "norm"})
    other.load_state_dict(model.state_dict())
    return other.eval()


# --- layout ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["instance", "fused", "batch"])
def test_johnson_default_parameter_count_and_keys(norm):
    model = JohnsonNet(norm)
    assert n_params(model) == 1_679_235
    keys = [k for k in model.state_dict() if "running" not in k and "num_batches" not in k]
    assert keys[:4] == ["conv1.conv2d.weight", "conv1.conv2d.bias", "in1.weight", "in1.bias"]
    assert "res1.conv1.conv2d.weight" in keys and "res5.in2.bias" in keys
    assert "deconv1.conv2d.weight" in keys and keys[-1] == "deconv3.conv2d.bias"
    assert len(keys) == 62
    assert model.state_dict()["deconv3.conv2d.weight"].shape == (3, 32, 9, 9)


def test_fused_johnson_uses_fused_layers():
    model = JohnsonNet("fused")
    assert isinstance(model.in1, sf.FusedInstanceNorm2d) and model.in1.activation == "relu"
    assert model.res1.in2.activation is None and model.in5.activation == "relu"
    assert not any(isinstance(m, (nn.InstanceNorm2d, nn.ReLU, nn.ReflectionPad2d))
                   and not isinstance(m, sf.FusedInstanceNorm2d) for m in model.modules())
    if hasattr(sf, "PaddedConv2d"):
        assert isinstance(model.conv1.conv2d, sf.PaddedConv2d)
        assert model.conv1.conv2d.padding_mode == "reflect"


@pytest.mark.parametrize("norm", ["instance", "fused", "batch"])
def test_texture_net_parameter_count(norm):
    assert n_params(TextureNet(norm)) == 116_915
    # Noise channels (ICML'16 variant) only widen the six first convolutions.
    assert n_params(TextureNet(norm, noise_channels=2)) == 116_915 + 6 * 2 * 9 * 8


def test_texture_net_layout():
    model = TextureNet("instance")
    widths = [m.conv1.out_channels for m in model.merges]
    assert widths == [16, 24, 32, 40, 48]
    assert model.final.in_channels == 48 and model.final.kernel_size == (1, 1)
    assert all(isinstance(m.pad1, nn.ReplicationPad2d) for m in model.branches)


def test_johnson_variant_counts():
    # texture_nets johnson.lua: replicate padding, transposed convolutions, final 3x3 conv.
    lua = JohnsonNet("instance", padding_mode="replicate", upsample="transpose", final_kernel=3)
    assert isinstance(lua.deconv1.conv2d, nn.ConvTranspose2d)
    assert n_params(lua) == 1_679_235 - 3 * 32 * (81 - 9)
    small = JohnsonNet("instance", channels=16, num_residual=3)
    assert not hasattr(small, "res4") and small.res3.conv1.conv2d.in_channels == 64


@pytest.mark.parametrize("kwargs", [dict(norm="group"), dict(channels=0), dict(num_residual=-1),
                                    dict(padding_mode="circular"), dict(upsample="bilinear"),
                                    dict(final_kernel=4), dict(tanh_scale=-1.0)])
def test_johnson_bad_arguments(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"JohnsonNet: {name}"):
        JohnsonNet(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(norm="layer"), dict(activation="gelu"),
                                    dict(noise_channels=-1), dict(num_scales=0)])
def test_texture_bad_arguments(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"TextureNet: {name}"):
        TextureNet(**kwargs)


# --- fused vs plain -------------------------------------------------------------------------------

JOHNSON_VARIANTS = {
    "examples": dict(channels=4, num_residual=2),
    "lua": dict(channels=4, num_residual=1, padding_mode="replicate", upsample="transpose",
                final_kernel=3),
    "tanh": dict(channels=3, num_residual=1, tanh_scale=150.0),
}


@pytest.mark.parametrize("variant", list(JOHNSON_VARIANTS))
@pytest.mark.parametrize("size", [(36, 44), (37, 45)])  # multiple of 4 / odd (output size moves)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_johnson_fused_matches_instance(variant, size, layout):
    plain = perturbed(JohnsonNet("instance", **JOHNSON_VARIANTS[variant]))
    fused = same_weights(plain, "fused")
    x = make_input((2, 3, *size), layout=layout, mean=120.0, std=60.0)
    with torch.no_grad():
        expected = plain(x.contiguous())
        actual = fused(x)
    scale = expected.abs().max().item()
    assert_close(actual, expected, atol=2e-5 * max(scale, 1.0), rtol=1e-4)


def _check_layout_and_nchw_choice(plain, x, actual, expected, layout, rel_atol, rtol, *args):
    """A fused model's output keeps the caller's layout and matches ``expected``; so does the
    same model told to compute in NCHW (channels_last=False)."""
    assert actual.is_contiguous(memory_format=torch.channels_last if layout == "channels_last"
                                else torch.contiguous_format)
    atol = rel_atol * max(expected.abs().max().item(), 1.0)
    assert_close(actual, expected, atol=atol, rtol=rtol)
    nchw = same_weights(plain, "fused")
    nchw.channels_last = False
    with torch.no_grad():
        assert_close(nchw(x, *args), expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_default_johnson_fused_computes_channels_last_with_its_cpu_algorithms(layout):
    # The full-width net: on CPU the fused model computes in channels_last, where the residual
    # convolutions run as Winograd and the last 9x9 32->3 conv as the direct kernel.
    from stylize_fast.ops.padded_conv import cpu_algorithm

    plain = perturbed(JohnsonNet("instance"))
    fused = same_weights(plain, "fused")
    x = make_input((1, 3, 36, 44), layout=layout, mean=120.0, std=60.0)
    seen = {}
    hooks = [fused.res1.register_forward_pre_hook(lambda m, a: seen.update(res=a[0])),
             fused.deconv3.register_forward_pre_hook(lambda m, a: seen.update(last=a[0]))]
    with torch.no_grad():
        expected = plain(x.contiguous())
        actual = fused(x)
    for h in hooks:
        h.remove()
    assert seen["res"].is_contiguous(memory_format=torch.channels_last)
    if sf.backends.available()["cpu"]:
        conv = fused.res1.conv1.conv2d
        assert cpu_algorithm(seen["res"], conv.weight, (1, 1), (1, 1), 1) == "winograd"
        last = fused.deconv3.conv2d
        assert cpu_algorithm(seen["last"], last.weight, (1, 1), (4, 4), 1) == "direct"
    _check_layout_and_nchw_choice(plain, x, actual, expected, layout, 1e-4, 1e-4)


def test_johnson_channels_last_option_is_checked():
    with pytest.raises(ValueError, match="JohnsonNet: channels_last"):
        JohnsonNet(channels_last="yes")
    assert JohnsonNet("instance", channels_last=True).channels_last is True


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("noise_channels", [0, 2])
def test_default_texture_fused_computes_channels_last(layout, noise_channels):
    # On CPU the fused TextureNet computes in channels_last (its 8..48-channel norms run in
    # place there); the output keeps the caller's layout and matches the plain model.
    plain = perturbed(TextureNet("instance", noise_channels=noise_channels))
    fused = same_weights(plain, "fused")
    x = make_input((2, 3, 70, 66), layout=layout, mean=120.0, std=60.0)
    noise = None
    if noise_channels:
        gen = torch.Generator().manual_seed(5)
        sizes = [(-(-70 // 32) * 32) >> (5 - k) for k in range(6)]
        widths = [(-(-66 // 32) * 32) >> (5 - k) for k in range(6)]
        noise = [torch.rand(2, noise_channels, max(h, 2), max(w, 2), generator=gen)
                 for h, w in zip(sizes, widths)]
    seen = {}
    hook = fused.merges[-1].register_forward_pre_hook(lambda m, a: seen.update(last=a[0]))
    with torch.no_grad():
        expected = plain(x.contiguous(), noise=noise)
        actual = fused(x, noise=noise)
    hook.remove()
    assert seen["last"].is_contiguous(memory_format=torch.channels_last)
    _check_layout_and_nchw_choice(plain, x, actual, expected, layout, 5e-4, 1e-3, noise)


def test_texture_channels_last_option_is_checked():
    with pytest.raises(ValueError, match="TextureNet: channels_last"):
        TextureNet(channels_last="yes")
    assert TextureNet("instance", channels_last=True).channels_last is True


@pytest.mark.parametrize("size", [(37, 45), (70, 33)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kwargs", [dict(), dict(activation="leaky_relu", negative_slope=0.2)])
def test_texture_fused_matches_instance(size, layout, kwargs):
    # A narrower, shallower pyramid keeps this quick; the default one is checked below.
    plain = perturbed(TextureNet("instance", branch_channels=3, num_scales=4, **kwargs))
    _check_texture_fused(plain, size, layout)


def test_default_texture_fused_matches_instance():
    _check_texture_fused(perturbed(TextureNet("instance")), (37, 45), "contiguous")


def _check_texture_fused(plain, size, layout):
    fused = same_weights(plain, "fused")
    x = make_input((1, 3, *size), layout=layout, mean=120.0, std=60.0)
    with torch.no_grad():
        expected = plain(x.contiguous())
        actual = fused(x)
    assert actual.shape == (1, 3, *size)  # any size in, same size out
    # 2x2 planes at the coarsest scale amplify float32 rounding; float64 below is tight.
    assert_close(actual, expected, atol=5e-4 * max(expected.abs().max().item(), 1.0), rtol=1e-3)


@pytest.mark.parametrize("arch", ["johnson", "texture"])
def test_fused_matches_instance_float64(arch):
    plain = (JohnsonNet("instance", channels=3, num_residual=1) if arch == "johnson"
             else TextureNet("instance", branch_channels=2, num_scales=3))
    plain = perturbed(plain).double()
    fused = same_weights(plain, "fused").double()
    x = make_input((1, 3, 21, 19), torch.float64, mean=100.0, std=50.0)
    with torch.no_grad():
        assert_close(fused(x), plain(x), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("arch", ["johnson", "texture"])
def test_fused_gradients_match_instance(arch):
    plain = (JohnsonNet("instance", channels=3, num_residual=1) if arch == "johnson"
             else TextureNet("instance", branch_channels=2, num_scales=3))
    plain = perturbed(plain).double().train()
    fused = same_weights(plain, "fused").double().train()
    x = make_input((2, 3, 16, 20), torch.float64, mean=100.0, std=50.0)
    upstream = torch.randn_like(plain(x))
    plain(x).backward(upstream)
    fused(x).backward(upstream)
    for (name, p), q in zip(plain.named_parameters(), fused.parameters()):
        assert_close(q.grad, p.grad, atol=1e-7, rtol=1e-6, name=f"grad of {name}")


def test_to_plain_is_standard_pytorch():
    fused = perturbed(TextureNet("fused", branch_channels=2, num_scales=3))
    plain = to_plain(fused)
    assert plain.norm == "instance" and not any(
        isinstance(m, sf.FusedInstanceNorm2d) for m in plain.modules())
    x = torch.rand(1, 3, 40, 40) * 255
    with torch.no_grad():
        assert_close(plain(x), fused(x), atol=1e-3, rtol=1e-3)
    batch = JohnsonNet("batch", channels=2, num_residual=0)
    assert to_plain(batch) is batch


def test_batch_norm_variant_trains_and_evals():
    for model in (JohnsonNet("batch", channels=2, num_residual=1),
                  TextureNet("batch", branch_channels=2, num_scales=3)):
        x = torch.rand(2, 3, 32, 32) * 255
        model.train()(x).mean().backward()
        assert int(model.state_dict()[next(k for k in model.state_dict()
                                            if k.endswith("num_batches_tracked"))]) == 1
        with torch.no_grad():
            assert torch.isfinite(model.eval()(x)).all()


def test_texture_noise_channels():
    model = TextureNet("fused", noise_channels=2, branch_channels=2, num_scales=3).eval()
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        a, b = model(x), model(x)  # fresh noise each call
        assert not torch.equal(a, b)
        sizes = [16 // 2 ** (2 - k) for k in range(3)]
        noise = [torch.rand(1, 2, s, s) for s in sizes]
        assert torch.equal(model(x, noise=noise), model(x, noise))


def test_texture_tiny_input():
    model = TextureNet("fused", branch_channels=2, num_scales=4).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 5, 3) * 255)  # padded to 16x16 inside, cropped back
    assert y.shape == (1, 3, 5, 3) and torch.isfinite(y).all()
