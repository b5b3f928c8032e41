"""Inference engine: any size in -> same size out, batching, tiling without seams, colour
preservation, strength, dtypes, image I/O (EXIF, grayscale, RGBA, 16-bit PNG), allocator."""

import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch import nn

from stylize_fast.inference import (
    Stylizer,
    collect_jobs,
    preserve_color,
    read_image,
    stylize_tiled,
    tune_allocator,
    write_image,
)
from stylize_fast.inference.engine import _ycbcr
from stylize_fast.inference.tiling import tile_starts
from stylize_fast.models import JohnsonNet, TextureNet
from stylize_fast.testing import assert_close

pytestmark = pytest.mark.filterwarnings("ignore:.*PaddedConv2d is not available")


def small_johnson(norm="fused"):
    torch.manual_seed(1)
    return JohnsonNet(norm, channels=4, num_residual=1).eval()


class LocalConv(nn.Module):
    """A purely local model (3x3 convs, receptive field 5): tiles with enough overlap must
    reproduce the whole-image result exactly."""

    multiple = 1

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1, padding_mode="replicate")
        self.b = nn.Conv2d(6, 3, 3, padding=1, padding_mode="replicate")

    def forward(self, x):
        return self.b(torch.tanh(self.a(x / 255))) * 100 + 128


# --- tensors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(37, 45), (5, 9), (64, 48)])
def test_any_size_gives_same_size(size):
    for model in (small_johnson(), TextureNet("fused", branch_channels=2, num_scales=3)):
        out = Stylizer(model).stylize_tensor(torch.rand(2, 3, *size) * 255)
        assert out.shape == (2, 3, *size) and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 255


def test_matches_model_on_multiple_sizes():
    model = small_johnson()
    x = torch.rand(2, 3, 32, 40) * 255
    with torch.no_grad():
        expected = model(x).clamp(0, 255)
    assert_close(Stylizer(model).stylize_tensor(x), expected, atol=1e-4, rtol=1e-5)
    assert_close(Stylizer(model).stylize_tensor(x[0]), expected[0], atol=1e-4, rtol=1e-5)


def test_batch_equals_one_by_one():
    stylizer = Stylizer(small_johnson())
    x = torch.rand(3, 3, 20, 28) * 255
    one_by_one = torch.cat([stylizer.stylize_tensor(x[i:i + 1]) for i in range(3)])
    assert_close(stylizer.stylize_tensor(x), one_by_one, atol=1e-3, rtol=1e-5)


def model_inputs(stylizer: Stylizer) -> list[torch.Tensor]:
    """Records the tensors the stylizer's model is called with (a forward pre-hook)."""
    seen: list[torch.Tensor] = []
    stylizer.model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    return seen


def test_channels_last_matches():
    model = small_johnson()
    x = torch.rand(1, 3, 36, 28) * 255
    expected = Stylizer(model).stylize_tensor(x)
    stylizer = Stylizer(model, channels_last=True)
    seen = model_inputs(stylizer)
    assert_close(stylizer.stylize_tensor(x), expected, atol=1e-3, rtol=1e-5)
    # It ran in channels_last: input and convolution weights.
    assert len(seen) == 1 and seen[0].is_contiguous(memory_format=torch.channels_last)
    assert not seen[0].is_contiguous()
    assert stylizer.model.conv1.conv2d.weight.is_contiguous(memory_format=torch.channels_last)
    assert next(model.parameters()).is_contiguous()  # the caller's model is left alone


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_dtypes_close_to_float32(dtype):
    model = small_johnson()
    with torch.no_grad():  # outputs spread over 0-255 instead of clamped near 0
        model.deconv3.conv2d.weight.mul_(40)
        model.deconv3.conv2d.bias.fill_(128)
    x = torch.rand(1, 3, 32, 32) * 255
    ref = Stylizer(model).stylize_tensor(x)
    assert ref.std() > 5
    stylizer = Stylizer(model, dtype=dtype)
    seen = model_inputs(stylizer)
    out = stylizer.stylize_tensor(x)
    assert out.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32
    # The model ran in that dtype (input and weights), which shows in the result.
    assert [t.dtype for t in seen] == [getattr(torch, dtype)]
    assert {p.dtype for p in stylizer.model.parameters()} == {getattr(torch, dtype)}
    assert not torch.equal(out, ref)
    mse = (out - ref).pow(2).mean().item()
    psnr = 10 * np.log10(255 ** 2 / max(mse, 1e-12))
    assert psnr > 30, psnr


def test_strength_and_colour():
    model = small_johnson()
    x = torch.rand(1, 3, 24, 24) * 255
    assert_close(Stylizer(model, strength=0.0).stylize_tensor(x), x, atol=1e-4, rtol=0)
    full = Stylizer(model).stylize_tensor(x)
    half = Stylizer(model, strength=0.5).stylize_tensor(x)
    assert_close(half, (x + full) / 2, atol=1e-3, rtol=1e-5)


def test_preserve_color_keeps_content_chroma():
    content = torch.rand(2, 3, 8, 8) * 200 + 20
    stylized = torch.rand(2, 3, 8, 8) * 255
    out = preserve_color(content, stylized)
    y_out, cb_out, cr_out = _ycbcr(out)
    y_sty, _, _ = _ycbcr(stylized)
    _, cb, cr = _ycbcr(content)
    assert_close(y_out, y_sty, atol=1e-3, rtol=0)
    assert_close(cb_out, cb, atol=1e-3, rtol=0)
    assert_close(cr_out, cr, atol=1e-3, rtol=0)


def test_bad_arguments():
    model = small_johnson()
    with pytest.raises(ValueError, match="dtype"):
        Stylizer(model, dtype="int8")
    with pytest.raises(ValueError, match="strength"):
        Stylizer(model, strength=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        Stylizer(model, batch_size=0)
    with pytest.raises(ValueError, match="tile_overlap"):
        Stylizer(model, tile=32, tile_overlap=32)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        Stylizer(model).stylize_tensor(torch.rand(1, 4, 8, 8))
    with pytest.raises(FileNotFoundError):
        Stylizer("/nonexistent/model.pth")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' is not usable"):
            Stylizer(model, device="cuda")


def test_stylize_pil_image_keeps_alpha_and_size():
    model = small_johnson()
    rgba = (np.random.default_rng(3).random((13, 17, 4)) * 255).astype(np.uint8)
    out = Stylizer(model).stylize_image(Image.fromarray(rgba))
    assert out.mode == "RGBA" and out.size == (17, 13)
    assert np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])
    expected = Stylizer(model).stylize_tensor(torch.from_numpy(rgba[..., :3]).permute(2, 0, 1)
                                              .float())
    assert np.abs(np.asarray(out)[..., :3].astype(np.float32)
                  - expected.permute(1, 2, 0).numpy()).max() <= 0.5 + 1e-3


# --- tiling ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (33, 32, 8), (32, 32, 8),
                                                 (97, 40, 0)])
def test_tile_starts_cover(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s:s + tile] = True
    assert covered.all() and starts[-1] + min(tile, length) == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("size", [(70, 53), (64, 64)])
def test_tiles_reproduce_local_model_exactly(size):
    model = LocalConv().eval()
    x = torch.rand(1, 3, *size) * 255
    with torch.no_grad():
        expected = model(x)
        # The blend ignores the outer quarter (3 px) of each 12-px band, more than the model's
        # receptive radius (2 px): every tile agrees with the whole image where it counts.
        actual = stylize_tiled(model, x, tile=24, overlap=12)
    assert_close(actual, expected, atol=1e-3, rtol=1e-5)


def test_stylizer_tile_option_runs_tiles_and_matches_whole():
    model = LocalConv().eval()
    x = torch.rand(1, 3, 70, 53) * 255
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    expected = Stylizer(model, tile=0).stylize_tensor(x)
    assert seen == [(70, 53)]
    seen.clear()
    actual = Stylizer(model, tile=24, tile_overlap=12).stylize_tensor(x)
    # A different path ran (5 x 4 tiles of at most 24 px, not one 70x53 forward) ...
    assert len(seen) == 20 and all(max(s) <= 24 for s in seen)
    # ... with the same result: the model is local, tiles overlap by more than its reach.
    assert_close(actual, expected, atol=1e-3, rtol=1e-5)


def _worst_edge(img: torch.Tensor) -> float:
    """Largest mean absolute step between neighbouring columns or rows: a seam is a column or
    row where the whole image jumps."""
    col = (img[..., 1:] - img[..., :-1]).abs().mean(dim=(0, 1, 2)).max()
    row = (img[..., 1:, :] - img[..., :-1, :]).abs().mean(dim=(0, 1, 3)).max()
    return max(col.item(), row.item())


def test_tiled_johnson_has_no_seams():
    model = small_johnson()
    with torch.no_grad():  # outputs spread over 0-255 instead of clamped near 0
        model.deconv3.conv2d.weight.mul_(40)
        model.deconv3.conv2d.bias.fill_(128)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12) * 255, size=(96, 96),
                                        mode="bilinear", align_corners=False)
    whole = _worst_edge(Stylizer(model, tile=0).stylize_tensor(x))
    blended = Stylizer(model, tile=48, tile_overlap=16).stylize_tensor(x)
    assert blended.shape == x.shape
    # Per-tile instance-norm statistics differ; without blending the tile border is the
    # strongest edge in the image (the check can fail), with blending it is not.
    hard_cut = _worst_edge(Stylizer(model, tile=48, tile_overlap=0).stylize_tensor(x))
    assert hard_cut > 1.3 * whole
    assert _worst_edge(blended) < 1.2 * whole


# --- image I/O ------------------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(tmp_path, orientation):
    data = (np.random.default_rng(orientation).random((5, 7, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(data)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    image.save(path, exif=exif, quality=100)
    loaded = read_image(path)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), np.float32)
    assert loaded.rgb.shape == expected.shape
    assert np.array_equal(loaded.rgb, expected)


def test_grayscale_rgba_and_16_bit_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    gray = (rng.random((9, 11)) * 255).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    im = read_image(tmp_path / "g.png")
    assert im.grayscale and im.bit_depth == 8 and im.alpha is None
    assert np.array_equal(im.rgb[..., 1], gray.astype(np.float32))

    rgba = (rng.random((6, 5, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    im = read_image(tmp_path / "a.png")
    assert np.array_equal(im.alpha * 255, rgba[..., 3].astype(np.float32))
    write_image(tmp_path / "a_out.png", im.rgb, im.alpha)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a_out.png")), rgba)

    g16 = (rng.random((7, 6)) * 65535).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    im = read_image(tmp_path / "g16.png")
    assert im.bit_depth == 16 and im.grayscale
    write_image(tmp_path / "g16_out.png", im.rgb, None, 16, grayscale=True)
    back = np.asarray(Image.open(tmp_path / "g16_out.png"))
    assert back.dtype == np.uint16 and np.abs(back.astype(int) - g16).max() <= 1


def test_16_bit_colour_png(tmp_path):
    rng = np.random.default_rng(1)
    data = (rng.random((5, 4, 4)) * 65535).astype(np.uint16)
    write_image(tmp_path / "c16.png", data[..., :3].astype(np.float32) * 255 / 65535,
                data[..., 3].astype(np.float32) / 65535, bit_depth=16)
    pytest.importorskip("png", reason="pypng not installed (Pillow truncates 16-bit colour)")
    im = read_image(tmp_path / "c16.png")
    assert im.bit_depth == 16 and not im.grayscale
    assert np.abs(im.rgb * 65535 / 255 - data[..., :3]).max() < 0.6
    assert np.abs(im.alpha * 65535 - data[..., 3]).max() < 0.6


def test_unreadable_files_are_skipped(tmp_path):
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    jobs = collect_jobs([tmp_path], tmp_path / "out")
    with pytest.warns(RuntimeWarning, match="skipped"):
        stats = Stylizer(small_johnson()).stylize_files(jobs)
    assert stats.images == 1 and [os.path.basename(s) for s, _ in stats.failed] == ["broken.png"]
    assert os.listdir(tmp_path / "out") == ["ok.png"]


def test_folder_is_batched_by_size(tmp_path):
    rng = np.random.default_rng(2)
    for i, size in enumerate([(10, 14), (10, 14), (13, 9), (10, 14)]):
        Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    stylizer = Stylizer(small_johnson(), batch_size=8)
    calls = []
    forward = stylizer._forward
    stylizer._forward = lambda x: calls.append(x.shape[0]) or forward(x)
    stats = stylizer.stylize_files(collect_jobs([tmp_path], tmp_path / "out"))
    assert stats.images == 4 and sorted(calls) == [1, 3]
    for i in range(4):
        a = Image.open(tmp_path / f"{i}.png")
        assert Image.open(tmp_path / "out" / f"{i}.png").size == a.size


def test_collect_jobs_errors(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "b.png")
    assert collect_jobs([tmp_path / "a.png"], tmp_path / "x.jpg") == [
        (str(tmp_path / "a.png"), str(tmp_path / "x.jpg"))]
    with pytest.raises(ValueError, match="is a file name but there are 2 inputs"):
        collect_jobs([tmp_path / "a.png", tmp_path / "b.png"], tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        collect_jobs([tmp_path / "missing.png"], tmp_path / "out")
    with pytest.raises(ValueError, match="overwrite"):
        collect_jobs([tmp_path / "a.png"], tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_allocator_tuning_on_glibc():
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").gnu_get_libc_version
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    assert tune_allocator(force=True) is True
    assert Stylizer(small_johnson()).allocator_tuned


def test_large_images_are_tiled_automatically(monkeypatch):
    from stylize_fast.inference import engine

    monkeypatch.setattr(engine, "AUTO_TILE_PIXELS", 30 * 30)
    monkeypatch.setattr(engine, "AUTO_TILE_SIZE", 24)
    stylizer = Stylizer(small_johnson(), tile_overlap=8)
    seen = []
    forward = stylizer._forward
    stylizer._forward = lambda x: seen.append(tuple(x.shape[-2:])) or forward(x)
    assert stylizer.stylize_tensor(torch.rand(1, 3, 40, 36) * 255).shape == (1, 3, 40, 36)
    assert len(seen) == 4 and max(max(s) for s in seen) == 24
    seen.clear()
    stylizer.stylize_tensor(torch.rand(1, 3, 28, 30) * 255)  # below the threshold: whole
    assert seen == [(28, 30)]
