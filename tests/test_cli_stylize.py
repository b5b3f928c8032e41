"""`stylize-fast stylize` end to end: a folder of mixed images and a short video, made here."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from stylize_fast.cli import main
from stylize_fast.inference import engine, read_image, write_image
from stylize_fast.inference.engine import _ycbcr
from stylize_fast.inference.video import video_backend_available
from stylize_fast.models import JohnsonNet, TextureNet, save
from stylize_fast.nn import FusedInstanceNorm2d

pytestmark = pytest.mark.filterwarnings("ignore:.*PaddedConv2d is not available")


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.pth"
    save(JohnsonNet("fused", channels=4, num_residual=1), path)
    return str(path)


def make_folder(folder):
    """Mixed images: odd-sized RGB JPEG, grayscale, RGBA, 16-bit grayscale and colour PNGs."""
    rng = np.random.default_rng(0)
    os.makedirs(folder)
    Image.fromarray((rng.random((23, 31, 3)) * 255).astype(np.uint8)).save(
        folder / "odd.jpg", quality=95)
    Image.fromarray((rng.random((17, 20)) * 255).astype(np.uint8)).save(folder / "gray.png")
    Image.fromarray((rng.random((21, 19, 4)) * 255).astype(np.uint8)).save(folder / "rgba.png")
    Image.fromarray((rng.random((18, 22)) * 65535).astype(np.uint16)).save(folder / "g16.png")
    write_image(folder / "c16.png", rng.random((15, 13, 3)) * 255, bit_depth=16)
    (folder / "notes.txt").write_text("not an image; ignored in folders")
    return {"odd.jpg": ((23, 31), "RGB"), "gray.png": ((17, 20), "RGB"),
            "rgba.png": ((21, 19), "RGBA"), "g16.png": ((18, 22), None),
            "c16.png": ((15, 13), None)}


def test_stylize_folder_of_mixed_images(tmp_path, model_file, capsys):
    expected = make_folder(tmp_path / "in")
    out = tmp_path / "out"
    rc = main(["stylize", "--model", model_file, "--input", str(tmp_path / "in"),
               "--output", str(out), "--batch-size", "2"])
    assert rc == 0
    assert sorted(os.listdir(out)) == sorted(expected)
    for name, ((h, w), mode) in expected.items():
        with Image.open(out / name) as im:
            assert im.size == (w, h), name
            if mode is not None:
                assert im.mode == mode, name
    with Image.open(out / "rgba.png") as im, Image.open(tmp_path / "in" / "rgba.png") as src:
        assert np.array_equal(np.asarray(im)[..., 3], np.asarray(src)[..., 3])  # alpha kept
    for name in ("g16.png", "c16.png"):  # 16-bit inputs give 16-bit (colour) outputs
        with open(out / name, "rb") as f:
            assert f.read(25)[24] == 16, name  # the PNG header's bit depth
    err = capsys.readouterr().err
    assert "5 images" in err and "images/s" in err


@pytest.fixture
def spread_model_file(tmp_path):
    """A model whose outputs spread over 0-255 (a random one's sit clamped near 0), so that
    colour, strength and precision show in the output."""
    torch.manual_seed(0)
    model = JohnsonNet("fused", channels=4, num_residual=1)
    with torch.no_grad():
        model.deconv3.conv2d.weight.mul_(40)
        model.deconv3.conv2d.bias.fill_(128)
    path = tmp_path / "spread.pth"
    save(model, path)
    return str(path)


@pytest.fixture
def forwards(monkeypatch):
    """Spy on the engine's forward: per call, the image (or tile) shape, the shape, dtype and
    layout the model got, and the model's parameter dtype and conv-weight layout."""
    seen = []
    real = engine.Stylizer._forward

    def spy(self, x):
        conv = next(m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d))
        seen.append({"shape": tuple(x.shape), "dtype": self.dtype,
                     "param_dtype": next(self.model.parameters()).dtype,
                     "weight_channels_last": conv.weight.is_contiguous(
                         memory_format=torch.channels_last) and conv.weight.shape[1] > 1,
                     "model": self.model})
        return real(self, x)

    def model_input(module, args):
        seen[-1]["model_shape"] = tuple(args[0].shape)
        seen[-1]["input_dtype"] = args[0].dtype
        seen[-1]["input_channels_last"] = args[0].is_contiguous(
            memory_format=torch.channels_last)

    monkeypatch.setattr(engine.Stylizer, "_forward", spy)
    hooks = []
    real_init = engine.Stylizer.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        hooks.append(self.model.register_forward_pre_hook(model_input))

    monkeypatch.setattr(engine.Stylizer, "__init__", init)
    yield seen
    for h in hooks:
        h.remove()


def stylize_one(tmp_path, model_file, name, *options):
    """Run the CLI on in/odd.jpg (23x31 RGB) with ``options``; returns (input, output) as
    float arrays (the input as the engine reads it)."""
    if not (tmp_path / "in").exists():
        make_folder(tmp_path / "in")
    src, out = tmp_path / "in" / "odd.jpg", tmp_path / f"{name}.png"
    rc = main(["stylize", "--model", model_file, "--input", str(src), "--output", str(out),
               "--no-progress", *options])
    assert rc == 0
    with Image.open(out) as im:
        assert im.size == (31, 23)
        return read_image(src).rgb.astype(np.float64), np.asarray(im, np.float64)


def ycbcr(rgb):
    y, cb, cr = _ycbcr(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    return y[0].numpy(), cb[0].numpy(), cr[0].numpy()


def test_default_options_run_float32_nchw_whole(tmp_path, spread_model_file, forwards):
    _, out = stylize_one(tmp_path, spread_model_file, "default")
    assert len(forwards) == 1 and forwards[0]["shape"] == (1, 3, 23, 31)
    assert forwards[0]["model_shape"] == (1, 3, 24, 32)  # padded to the model's multiple
    assert forwards[0]["input_dtype"] == forwards[0]["param_dtype"] == torch.float32
    assert not forwards[0]["input_channels_last"] and not forwards[0]["weight_channels_last"]
    assert out.std() > 10  # a spread-out image, so the option tests below can see changes


def test_dtype_bfloat16_runs_the_model_in_bfloat16(tmp_path, spread_model_file, forwards):
    _, ref = stylize_one(tmp_path, spread_model_file, "f32")
    _, out = stylize_one(tmp_path, spread_model_file, "bf16", "--dtype", "bfloat16")
    run = forwards[-1]
    assert run["input_dtype"] == run["param_dtype"] == torch.bfloat16
    assert not np.array_equal(out, ref)  # bfloat16 rounding shows in the image
    psnr = 10 * np.log10(255 ** 2 / ((out - ref) ** 2).mean())
    assert psnr > 30, psnr  # ... but it is the same stylisation


def test_channels_last_runs_the_model_in_channels_last(tmp_path, spread_model_file, forwards):
    _, ref = stylize_one(tmp_path, spread_model_file, "nchw")
    _, out = stylize_one(tmp_path, spread_model_file, "nhwc", "--channels-last")
    run = forwards[-1]
    assert run["input_channels_last"] and run["weight_channels_last"]
    assert run["input_dtype"] == torch.float32
    assert np.abs(out - ref).max() <= 1  # same result up to 8-bit rounding


def test_tile_runs_tiles_of_that_size(tmp_path, spread_model_file, forwards):
    content, whole = stylize_one(tmp_path, spread_model_file, "whole")
    forwards.clear()
    _, tiled = stylize_one(tmp_path, spread_model_file, "tiled", "--tile", "16",
                           "--tile-overlap", "4")
    # 23x31 in tiles of at most 16 with 4 shared: 2 rows x 3 columns of forwards.
    assert len(forwards) == 6
    assert all(max(f["shape"][-2:]) <= 16 for f in forwards)  # (tiles padded to MIN_SIDE)
    # The CLI's tiled output is the engine's tiled stylisation of the same image ...
    stylizer = engine.Stylizer(spread_model_file, tile=16, tile_overlap=4)
    expected = stylizer.stylize_array(content).round()
    assert np.abs(tiled - expected).max() <= 1
    # ... and, instance norm's statistics being per tile, not the whole-image one.
    assert np.abs(tiled - whole).mean() > 1


def test_preserve_color_keeps_the_inputs_colour(tmp_path, spread_model_file):
    content, styled = stylize_one(tmp_path, spread_model_file, "styled")
    _, kept = stylize_one(tmp_path, spread_model_file, "kept", "--preserve-color")
    y_in, cb_in, cr_in = ycbcr(content)
    y_styled, cb_styled, cr_styled = ycbcr(styled)
    y_kept, cb_kept, cr_kept = ycbcr(kept)
    inside = ((kept > 0) & (kept < 255)).all(-1)  # clamping to 0-255 moves the colour
    assert inside.mean() > 0.5
    # Chroma of the input (up to 8-bit rounding), luminance of the stylisation.
    assert np.abs(cb_kept - cb_in)[inside].max() < 2 and np.abs(cr_kept - cr_in)[inside].max() < 2
    assert np.abs(y_kept - y_styled)[inside].max() < 2
    # Without the option the colours are the model's own, far from the input's.
    assert np.abs(cb_styled - cb_in).mean() > 10 * np.abs(cb_kept - cb_in)[inside].mean()
    assert np.abs(cr_styled - cr_in).mean() > 10 * np.abs(cr_kept - cr_in)[inside].mean()


def test_strength_blends_with_the_input(tmp_path, spread_model_file):
    content, full = stylize_one(tmp_path, spread_model_file, "full")
    _, part = stylize_one(tmp_path, spread_model_file, "part", "--strength", "0.7")
    expected = content + 0.7 * (full - content)
    assert np.abs(part - expected).max() <= 1  # both outputs rounded to 8 bits
    assert np.abs(part - full).mean() > 5


def test_all_options_together(tmp_path, spread_model_file, forwards):
    content, _ = stylize_one(tmp_path, spread_model_file, "all", "--preserve-color",
                             "--strength", "0.7", "--channels-last", "--dtype", "bfloat16",
                             "--tile", "16", "--tile-overlap", "4")
    assert len(forwards) == 6 and all(max(f["shape"][-2:]) <= 16 for f in forwards)
    assert all(f["input_dtype"] == f["param_dtype"] == torch.bfloat16 for f in forwards)
    assert all(f["input_channels_last"] and f["weight_channels_last"] for f in forwards)
    _, out = stylize_one(tmp_path, spread_model_file, "all_again", "--preserve-color",
                         "--strength", "0.7", "--channels-last", "--dtype", "bfloat16",
                         "--tile", "16", "--tile-overlap", "4")
    stylizer = engine.Stylizer(spread_model_file, preserve_color=True, strength=0.7,
                               channels_last=True, dtype="bfloat16", tile=16, tile_overlap=4)
    assert np.abs(out - stylizer.stylize_array(content).round()).max() <= 1


def test_texture_net_model_and_norm_option(tmp_path, forwards):
    make_folder(tmp_path / "in")
    save(TextureNet("fused", branch_channels=2, num_scales=3), tmp_path / "t.pth")
    for norm in ("instance", None):
        rc = main(["stylize", "--model", str(tmp_path / "t.pth"), "--input",
                   str(tmp_path / "in" / "gray.png"), str(tmp_path / "in" / "rgba.png"),
                   "--output", str(tmp_path / f"out_{norm}"), "--no-progress"]
                  + (["--norm", norm] if norm else []))
        assert rc == 0
        assert sorted(os.listdir(tmp_path / f"out_{norm}")) == ["gray.png", "rgba.png"]
    instance, fused = forwards[0]["model"], forwards[-1]["model"]
    assert type(instance).__name__ == type(fused).__name__ == "TextureNet"
    # --norm instance builds plain PyTorch layers; the saved (default) model is fused.
    assert instance.norm == "instance" and fused.norm == "fused"
    assert not any(isinstance(m, FusedInstanceNorm2d) for m in instance.modules())
    assert any(isinstance(m, FusedInstanceNorm2d) for m in fused.modules())


def test_batch_size_groups_images_of_one_size(tmp_path, model_file, forwards):
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "in")
    for i in range(5):
        Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(
            tmp_path / "in" / f"{i}.png")
    rc = main(["stylize", "--model", model_file, "--input", str(tmp_path / "in"),
               "--output", str(tmp_path / "out"), "--batch-size", "2", "--no-progress"])
    assert rc == 0 and len(os.listdir(tmp_path / "out")) == 5
    assert [f["shape"][0] for f in forwards] == [2, 2, 1]


def test_errors(tmp_path, model_file, capsys):
    make_folder(tmp_path / "in")
    rc = main(["stylize", "--model", str(tmp_path / "missing.pth"), "--input",
               str(tmp_path / "in"), "--output", str(tmp_path / "out")])
    assert rc == 1 and "model file not found" in capsys.readouterr().err
    rc = main(["stylize", "--model", model_file, "--input", str(tmp_path / "in"),
               "--output", str(tmp_path / "one.png")])
    assert rc == 1 and "give a folder for --output" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"garbage")
    rc = main(["stylize", "--model", model_file, "--input", str(tmp_path / "bad.png"),
               str(tmp_path / "in" / "gray.png"), "--output", str(tmp_path / "o2"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "skipped" in err and "bad.png" in err and "1 of 2 inputs" in err
    assert os.listdir(tmp_path / "o2") == ["gray.png"]
    with pytest.raises(SystemExit):
        main(["stylize", "--model", model_file, "--input", "x", "--output", "y",
              "--strength", "2"])


def make_video(path, frames=6, size=(24, 32)):
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            data = (rng.random((*size, 3)) * 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(data, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.skipif(not video_backend_available(), reason="PyAV (pip install av) not installed")
def test_stylize_video(tmp_path, model_file, capsys):
    import av

    make_video(tmp_path / "clip.mp4")
    rc = main(["stylize", "--model", model_file, "--input", str(tmp_path / "clip.mp4"),
               "--output", str(tmp_path / "out"), "--batch-size", "4"])
    assert rc == 0
    with av.open(str(tmp_path / "out" / "clip.mp4")) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(10)
    assert len(decoded) == 6 and decoded[0].shape == (24, 32, 3)
    assert "6 frames" in capsys.readouterr().err
