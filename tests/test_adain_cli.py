"""AdaIN through the command line and the inference engine: `train --arch adain`, `stylize
--style IMAGE [--alpha] [--style-weights] [--preserve-color]`, `info --model`, `export`, and the
errors of flags given to the wrong kind of model."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import stylize_fast as sf
from stylize_fast.cli import main as cli_main
from stylize_fast.inference.color import match_color
from stylize_fast.training.data import load_style, synthetic_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An AdaIN decoder trained for 2 iterations through the CLI, and images to stylise."""
    root = tmp_path_factory.mktemp("adain_cli")
    synthetic_images(root / "data", 3, 40, seed=0)
    synthetic_images(root / "styles", 3, 40, seed=7)
    torch.set_num_threads(1)
    code = cli_main(["train", "--arch", "adain", "--style-data", str(root / "styles"),
                     "--data", str(root / "data"), "--output", str(root / "run"),
                     "--iterations", "2", "--batch-size", "2", "--image-size", "32",
                     "--vgg-weights", "random", "--workers", "0", "--no-progress"])
    assert code == 0
    # Two iterations leave the decoder's output near 0, which the clamp turns into black
    # images that any two runs agree on. Shift and widen its last layer so that outputs span
    # 0-255 and every flag's effect shows in the files.
    net = sf.models.load(root / "run" / "model.pth")
    last = net.decoder.layers[-1].conv2d
    with torch.no_grad():
        last.weight.mul_(40.0)
        last.bias.fill_(0.5)
    sf.models.save(net, root / "run" / "visible.pth")
    content = root / "content.png"
    gen = torch.Generator().manual_seed(3)
    Image.fromarray((torch.rand(36, 44, 3, generator=gen) * 255).to(torch.uint8).numpy()) \
        .save(content)
    styles = sorted(str(p) for p in (root / "styles").iterdir())
    return {"root": root, "model": str(root / "run" / "visible.pth"), "content": str(content),
            "styles": styles}


def _stylize(run, tmp_path, *flags) -> tuple[int, Image.Image | None]:
    out = tmp_path / "out.png"
    try:
        code = cli_main(["stylize", "--model", run["model"], "--input", run["content"],
                         "--output", str(out), *flags, "--no-progress"])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, (Image.open(out).convert("RGB") if code == 0 else None)


def _expected(run, styles, weights=None, alpha=1.0, preserve=False) -> torch.Tensor:
    """The engine's result computed from the model's own methods (uint8 HWC)."""
    net = sf.models.load(run["model"])
    x = torch.from_numpy(__import__("numpy").asarray(Image.open(run["content"]).convert("RGB"),
                                                     dtype="float32")).permute(2, 0, 1)
    images = [load_style(p) for p in styles]
    if preserve:
        images = [match_color(s[0], x).unsqueeze(0) for s in images]
    stylizer = sf.Stylizer(net, style_images=images, style_weights=weights, alpha=alpha,
                           tune_allocator=False)
    return stylizer.stylize_tensor(x).round().to(torch.uint8).permute(1, 2, 0)


def test_train_writes_a_loadable_adain_model(run):
    path = run["root"] / "run" / "model.pth"
    net = sf.models.load(path)
    assert type(net).__name__ == "AdaINNet"
    assert sf.models.load_checkpoint(path)["metadata"]["iterations"] == 2


def test_outputs_are_not_saturated(run, tmp_path):
    _, image = _stylize(run, tmp_path, "--style", run["styles"][0])
    values = torch.from_numpy(__import__("numpy").asarray(image)).float()
    assert 0.2 < ((values > 0) & (values < 255)).float().mean() and values.std() > 10


@pytest.mark.parametrize("flags,kw", [
    ((), {}),
    (("--alpha", "0.4"), {"alpha": 0.4}),
    (("--style-weights", "1,3"), {"weights": [1.0, 3.0], "two": True}),
    (("--preserve-color",), {"preserve": True}),
])
def test_stylize_flags_match_the_engine(run, tmp_path, flags, kw):
    two = kw.pop("two", False)
    styles = run["styles"][:2] if two else run["styles"][:1]
    code, image = _stylize(run, tmp_path, "--style", *styles, *flags)
    assert code == 0 and image.size == (44, 36)
    expected = _expected(run, styles, **kw)
    assert torch.equal(torch.from_numpy(__import__("numpy").asarray(image)), expected)


def test_alpha_and_style_change_the_result(run, tmp_path):
    _, full = _stylize(run, tmp_path, "--style", run["styles"][0])
    _, half = _stylize(run, tmp_path, "--style", run["styles"][0], "--alpha", "0.5")
    _, other = _stylize(run, tmp_path, "--style", run["styles"][1])
    assert full.tobytes() != half.tobytes() and full.tobytes() != other.tobytes()


def test_engine_preserve_color_recolours_the_style_per_content_image(run):
    net = sf.models.load(run["model"])
    style = load_style(run["styles"][0])
    gen = torch.Generator().manual_seed(0)
    batch = torch.rand(2, 3, 32, 32, generator=gen) * 255
    batch[1] = batch[1] * 0.3  # a darker second image: its own recoloured style
    stylizer = sf.Stylizer(net, style_images=[style], preserve_color=True, tune_allocator=False)
    together = stylizer.stylize_tensor(batch)
    for i in range(2):
        alone = sf.Stylizer(net, style_images=[match_color(style[0], batch[i]).unsqueeze(0)],
                            tune_allocator=False).stylize_tensor(batch[i:i + 1])
        torch.testing.assert_close(together[i:i + 1], alone, atol=1e-3, rtol=1e-4)


def test_info_and_export(run, tmp_path, capsys):
    capsys.readouterr()
    assert cli_main(["info", "--model", run["model"]]) == 0
    text = capsys.readouterr().out
    assert "AdaINNet" in text and "any (AdaIN" in text and "UNTRAINED" in text
    pytest.importorskip("onnxruntime")
    assert cli_main(["export", "--model", run["model"], "--format", "onnx",
                     "--output", str(tmp_path / "adain.onnx")]) == 0
    from stylize_fast.export import verify_onnx

    assert verify_onnx(run["model"], tmp_path / "adain.onnx")["max_abs_diff"] < 1e-2


def test_errors(run, tmp_path, capsys):
    unreadable = tmp_path / "broken.png"
    unreadable.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cases = [
        ((), "needs style_images"),
        (("--style", str(tmp_path / "missing.png")), "no such file"),
        (("--style", str(unreadable)), "cannot read"),
        (("--style", run["styles"][0], "--style-index", "0"), "not a style index"),
        (("--style", *run["styles"][:2], "--style-weights", "1"), "1 style weights for 2"),
        (("--style", *run["styles"][:2], "--style-weights", "0,0"), "zero"),
        (("--style", run["styles"][0], "--alpha", "1.5"), "must be in [0, 1]"),
    ]
    for flags, message in cases:
        code, _ = _stylize(run, tmp_path, *flags)
        err = capsys.readouterr().err
        assert code != 0 and message in err, (flags, err)
    root = run["root"]
    code = cli_main(["train", "--arch", "adain", "--data", str(root / "data"),
                     "--output", str(tmp_path / "t")])
    assert code != 0 and "--style-data" in capsys.readouterr().err
    code = cli_main(["train", "--arch", "adain", "--style-data", str(root / "styles"),
                     "--style", run["styles"][0], "--data", str(root / "data"),
                     "--output", str(tmp_path / "t")])
    assert code != 0 and "--style-data" in capsys.readouterr().err
