"""`stylize-fast stylize` end to end: a folder of mixed images and a short video, made here."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from stylize_fast.cli import main
from stylize_fast.inference import write_image
from stylize_fast.inference.video import video_backend_available
from stylize_fast.models import JohnsonNet, TextureNet, save

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


def test_stylize_single_file_options(tmp_path, model_file):
    make_folder(tmp_path / "in")
    out = tmp_path / "single.png"
    rc = main(["stylize", "--model", model_file, "--input", str(tmp_path / "in" / "odd.jpg"),
               "--output", str(out), "--preserve-color", "--strength", "0.7",
               "--channels-last", "--dtype", "bfloat16", "--tile", "16", "--tile-overlap", "4",
               "--no-progress"])
    assert rc == 0
    with Image.open(out) as im:
        assert im.size == (31, 23)


def test_texture_net_model(tmp_path):
    make_folder(tmp_path / "in")
    save(TextureNet("fused", branch_channels=2, num_scales=3), tmp_path / "t.pth")
    rc = main(["stylize", "--model", str(tmp_path / "t.pth"), "--input",
               str(tmp_path / "in" / "gray.png"), str(tmp_path / "in" / "rgba.png"),
               "--output", str(tmp_path / "out"), "--no-progress", "--norm", "instance"])
    assert rc == 0 and sorted(os.listdir(tmp_path / "out")) == ["gray.png", "rgba.png"]


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
