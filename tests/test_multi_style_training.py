"""Several styles in one generator, end to end: the per-sample style loss, multi-style training
(exact resume, DDP), adding a style (the others stay bit-identical), model files that record
style names and thumbnails, the CLI (train / stylize / info / export) and its errors."""

from __future__ import annotations

import os

import pytest
import torch

import stylize_fast as sf
from stylize_fast.cli import main as cli_main
from stylize_fast.training.data import synthetic_images, synthetic_style
from stylize_fast.training.losses import PerceptualLoss, loss_config
from stylize_fast.training.styles import draw_style_indices
from stylize_fast.training.trainer import TrainConfig, train

from .train_helpers import assert_same_state, tiny_config, train_on_ranks

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_style")
    synthetic_images(root / "data", 6, 40, seed=0)
    for k in range(4):
        synthetic_style(root / f"style{k}.png", 48, seed=10 + k)
    return root


def _styles(root, count=3):
    return [str(root / f"style{k}.png") for k in range(count)]


@pytest.fixture(scope="module")
def trained(root, tmp_path_factory):
    """A 3-style JohnsonNet trained for 6 iterations (shared by the read-only tests)."""
    out = tmp_path_factory.mktemp("trained")
    torch.set_num_threads(1)
    result = train(tiny_config({"data": str(root / "data"), "style": _styles(root)}, out))
    return result


def test_per_sample_style_targets_match_separate_losses(root):
    torch.manual_seed(0)
    cfg = loss_config("examples", style_layers=["relu1_2", "relu2_2"])
    loss = PerceptualLoss(cfg, vgg_weights="random")
    styles = [torch.rand(1, 3, 40 + 8 * k, 48) * 255 for k in range(3)]
    output, content = torch.rand(3, 3, 32, 32) * 255, torch.rand(3, 3, 32, 32) * 255
    index = torch.tensor([2, 0, 1])
    loss.set_style(styles)
    mixed = loss(output, content, index)["style"]
    separate = []
    for i in range(3):
        loss.set_style(styles[int(index[i])])
        separate.append(loss(output[i:i + 1], content[i:i + 1])["style"])
    assert torch.allclose(mixed, torch.stack(separate).mean(), rtol=1e-5)
    loss.set_style(styles)
    with pytest.raises(ValueError, match="style_index"):
        loss(output, content)


def test_style_draws_are_a_function_of_seed_iteration_and_global_position():
    a = draw_style_indices(3, 7, 0, 4, 5)
    assert torch.equal(a, draw_style_indices(3, 7, 0, 4, 5))
    assert not torch.equal(a, draw_style_indices(3, 8, 0, 4, 5))
    ranks = torch.cat([draw_style_indices(3, 7, r, 2, 5, world_size=2) for r in range(2)])
    assert torch.equal(ranks, a)  # 2 ranks x batch 2 == 1 process x batch 4
    many = draw_style_indices(0, 0, 0, 4000, 5)
    assert many.min() == 0 and many.max() == 4
    assert (torch.bincount(many, minlength=5).float() / 4000 - 0.2).abs().max() < 0.03


def test_multi_style_run_trains_every_style_and_records_them(trained, root):
    model = sf.models.load(trained.final_model)
    assert model.styles == 3 and model.in1.weight.shape == (3, 32)
    rows = model.in1.weight.detach()
    assert not torch.equal(rows[0], rows[1]) and not torch.equal(rows[1], rows[2])
    meta = sf.models.load_checkpoint(trained.final_model)["metadata"]
    assert meta["styles"] == ["style0.png", "style1.png", "style2.png"]
    thumbs = meta["style_thumbnails"]
    assert thumbs.shape == (3, 3, 64, 64) and thumbs.dtype == torch.uint8
    assert not torch.equal(thumbs[0], thumbs[1])
    x = torch.rand(2, 3, 32, 32) * 255
    with torch.no_grad():
        outs = [model(x, torch.full((2,), k)) for k in range(3)]
    assert not torch.allclose(outs[0], outs[1])
    samples = sorted(os.listdir(os.path.join(os.path.dirname(trained.final_model), "samples")))
    assert samples


def test_multi_style_resume_is_exact(root, tmp_path):
    images = {"data": str(root / "data"), "style": _styles(root)}
    full = train(tiny_config(images, tmp_path / "full"))
    train(tiny_config(images, tmp_path / "split", stop_at=3))
    resumed = train(tiny_config(images, tmp_path / "split", resume=True))
    assert resumed.iteration == 6
    assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    with pytest.raises(ValueError, match="number of styles"):
        train(tiny_config({"data": str(root / "data"), "style": _styles(root, 2)},
                          tmp_path / "split", resume=True))


def test_add_style_trains_only_the_new_rows(trained, root, tmp_path):
    images = {"data": str(root / "data"), "style": None}
    new = str(root / "style3.png")
    result = train(tiny_config(images, tmp_path / "add", add_style=new,
                               model=trained.final_model))
    old = sf.models.load(trained.final_model)
    grown = sf.models.load(result.final_model)
    assert grown.styles == 4
    old_state, grown_state = old.state_dict(), grown.state_dict()
    for key, value in old_state.items():
        if grown_state[key].shape == value.shape:  # every non-norm weight untouched
            assert torch.equal(grown_state[key], value), key
        else:  # old rows untouched, the new row trained away from its start (the rows' mean)
            assert torch.equal(grown_state[key][:3], value), key
    assert not torch.equal(grown.in1.weight[3], old.in1.weight.mean(0))
    x = torch.rand(2, 3, 32, 32) * 255
    with torch.no_grad():
        for k in range(3):  # the existing styles' outputs are bit-identical
            index = torch.full((2,), k)
            assert torch.equal(grown(x, index), old(x, index))
    meta = sf.models.load_checkpoint(result.final_model)["metadata"]
    assert meta["styles"] == ["style0.png", "style1.png", "style2.png", "style3.png"]
    assert meta["style_thumbnails"].shape[0] == 4
    assert meta["extends"] == os.path.basename(trained.final_model)


def test_add_style_resume_is_exact_and_works_from_a_single_style_model(root, tmp_path):
    single = train(tiny_config({"data": str(root / "data"), "style": _styles(root, 1)},
                               tmp_path / "single", iterations=2))
    images = {"data": str(root / "data"), "style": None}
    kw = dict(add_style=str(root / "style3.png"), model=single.final_model)
    full = train(tiny_config(images, tmp_path / "full", **kw))
    train(tiny_config(images, tmp_path / "split", stop_at=2, **kw))
    resumed = train(tiny_config(images, tmp_path / "split", resume=True, **kw))
    assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    grown = sf.models.load(full.final_model)
    base = sf.models.load(single.final_model)
    x = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        assert torch.equal(grown(x, torch.tensor([0])), base(x))
    assert sf.models.load_checkpoint(full.final_model)["metadata"]["styles"][0] == "style0.png"


def test_train_config_errors(root, tmp_path):
    base = dict(data=str(root / "data"), output=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="--add-style needs --model"):
        TrainConfig(style=None, add_style=str(root / "style3.png"), **base)
    with pytest.raises(ValueError, match="do not pass --style"):
        TrainConfig(style=_styles(root), add_style="x.png", model="m.pth", **base)
    with pytest.raises(ValueError, match="--style"):
        TrainConfig(style=None, **base)
    with pytest.raises(ValueError, match="instance or fused"):
        train(tiny_config({"data": str(root / "data"), "style": _styles(root)},
                          tmp_path / "batch", norm="batch"))
    with pytest.raises(FileNotFoundError, match="--style"):
        train(tiny_config({"data": str(root / "data"), "style": [*_styles(root, 2), "no.png"]},
                          tmp_path / "missing"))


def _ddp_config(root, output, **kw) -> TrainConfig:
    from pathlib import Path

    root = Path(root)
    options = dict(norm="fused", iterations=3, batch_size=1, checkpoint_every=2, seed=11,
                   sample_every=5)
    options.update(kw)
    return tiny_config({"data": str(root / "data"), "style": _styles(root)}, output, **options)


def test_multi_style_ddp_ranks_agree_and_match_one_process(root):
    import json

    out = root / "ddp"
    out.mkdir()
    r0, r1 = train_on_ranks(_ddp_config(root, out), root / "ddp_ranks")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
    # 2 ranks x batch 1 draw the samples and the styles of 1 process x batch 2.
    single = train(_ddp_config(root, root / "single", batch_size=2))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    for e, s in zip(log, single.history):
        for term in ("content", "style", "total"):
            assert e[term] == pytest.approx(s[term], rel=1e-4), (e, s)


def test_cli_train_info_stylize_export(root, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["train", "--style", *_styles(root, 2), "--data", str(root / "data"),
                     "--output", str(out), "--iterations", "2", "--batch-size", "2",
                     "--image-size", "32", "--vgg-weights", "random", "--workers", "0",
                     "--style-layers", "relu1_2", "--no-progress"]) == 0
    model = str(out / "model.pth")
    capsys.readouterr()
    assert cli_main(["info", "--model", model, "--thumbnails", str(tmp_path / "thumbs")]) == 0
    text = capsys.readouterr().out
    assert "styles: 2" in text and "0: style0.png" in text and "1: style1.png" in text
    assert sorted(os.listdir(tmp_path / "thumbs")) == ["style_00_style0.png",
                                                       "style_01_style1.png"]

    from PIL import Image

    image = tmp_path / "in.png"
    Image.fromarray((torch.rand(36, 44, 3) * 255).to(torch.uint8).numpy()).save(image)
    for flag, value in (("--style-index", "1"), ("--style-weights", "1,3")):
        target = tmp_path / f"out{flag}.png"
        assert cli_main(["stylize", "--model", model, "--input", str(image), "--output",
                         str(target), flag, value, "--no-progress"]) == 0
        assert Image.open(target).size == (44, 36)
    # --style-index 1 is the blend (0, 1); the files agree with the model run directly
    net = sf.models.load(model)
    stylizer = sf.Stylizer(net, style=[0.0, 1.0], tune_allocator=False)
    via_weights = stylizer.stylize_image(Image.open(image))
    assert Image.open(tmp_path / "out--style-index.png").tobytes() == via_weights.tobytes()

    onnx = pytest.importorskip("onnxruntime")
    assert onnx is not None
    assert cli_main(["export", "--model", model, "--format", "onnx",
                     "--output", str(tmp_path / "m.onnx")]) == 0
    from stylize_fast.export import verify_onnx

    assert verify_onnx(model, tmp_path / "m.onnx")["max_abs_diff"] < 1e-2


def test_cli_errors(trained, root, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "in.png"
    Image.fromarray((torch.rand(32, 32, 3) * 255).to(torch.uint8).numpy()).save(image)
    multi = trained.final_model
    single = str(tmp_path / "single.pth")
    sf.models.save(sf.models.JohnsonNet(channels=4, num_residual=1), single)
    cases = [
        ([multi], "holds 3 styles"),
        ([multi, "--style-index", "3"], "out of range"),
        ([multi, "--style-weights", "1,2"], "3 numbers"),
        ([multi, "--style-weights", "0,0,0"], "positive sum"),
        ([multi, "--style-weights=-1,1,1"], "non-negative"),
        ([single, "--style-index", "0"], "single style"),
        ([single, "--style-weights", "1"], "single style"),
        ([multi, "--style", str(image)], "AdaIN"),
    ]
    for args, message in cases:
        code = cli_main(["stylize", "--model", args[0], "--input", str(image), "--output",
                         str(tmp_path / "o.png"), *args[1:], "--no-progress"])
        err = capsys.readouterr().err
        assert code != 0 and message in err, (args, err)
    code = cli_main(["train", "--style", _styles(root)[0], "--style-data", str(root),
                     "--data", str(root / "data"), "--output", str(tmp_path / "t")])
    assert code != 0 and "--arch adain" in capsys.readouterr().err
