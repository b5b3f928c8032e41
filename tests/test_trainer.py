"""Trainer: a short run learns, checkpoints survive a crash mid-save, resume is exact, the final
model loads with sf.models.load, the CLI works, the data order is a function of the seed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import stylize_fast as sf
from stylize_fast.cli import main as cli_main
from stylize_fast.training import trainer as trainer_mod
from stylize_fast.training.data import (
    ContentImages,
    ResumableBatchSampler,
    find_images,
    synthetic_images,
    synthetic_style,
)
from stylize_fast.training.trainer import atomic_save, load_checkpoint, train

from .train_helpers import assert_same_state, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    synthetic_images(root / "data" / "nested", 6, 40, seed=0)
    (root / "data" / "notes.txt").write_text("not an image")
    (root / "data" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    style = synthetic_style(root / "style.png", 48, seed=1)
    return {"data": str(root / "data"), "style": style}


_config = tiny_config
_assert_same_state = assert_same_state


def test_find_images_recursive_and_counts_unreadable(images):
    files, skipped = find_images(images["data"])
    assert len(files) == 6 and all("nested" in f for f in files)
    assert skipped == 2
    with pytest.raises(FileNotFoundError, match="--data"):
        find_images(images["data"] + "/missing")


def test_sampler_order_is_function_of_seed_and_split_is_disjoint():
    one = ResumableBatchSampler(7, 4, seed=5, start=0, stop=6)
    again = ResumableBatchSampler(7, 4, seed=5, start=3, stop=6)  # a resumed sampler
    assert list(one)[3:] == list(again)
    ranks = [ResumableBatchSampler(7, 2, seed=5, start=0, stop=6, rank=r, world_size=2)
             for r in range(2)]
    for t, batch in enumerate(one):
        assert ranks[0].batch_at(t) + ranks[1].batch_at(t) == batch
    # every epoch (7 consecutive positions) visits every image once
    flat = [i for b in one for i, _ in b]
    assert sorted(flat[:7]) == list(range(7)) and sorted(flat[7:14]) == list(range(7))
    assert list(ResumableBatchSampler(7, 4, seed=6, start=0, stop=6)) != list(one)


def test_dataset_crops_are_deterministic(images):
    files, _ = find_images(images["data"])
    ds = ContentImages(files, 24)
    a, b = ds[(1, 1234)], ds[(1, 1234)]
    assert a.shape == (3, 24, 24) and a.dtype == torch.float32 and torch.equal(a, b)
    assert 0 <= a.min() and a.max() <= 255 and a.std() > 1


def test_short_run_loss_decreases_and_writes_outputs(images, tmp_path):
    cfg = _config(images, tmp_path / "run", iterations=12, lr=1e-2, lr_schedule="constant",
                  checkpoint_every=6)
    result = train(cfg)
    totals = [h["total"] for h in result.history]
    assert len(totals) == 12
    assert sum(totals[-3:]) / 3 < 0.8 * sum(totals[:3]) / 3, totals
    out = tmp_path / "run"
    assert (out / "checkpoint.pth").is_file() and (out / "model.pth").is_file()
    assert sorted(os.listdir(out / "samples")) == [f"iter_{i:07d}.png" for i in (3, 6, 9, 12)]
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 12
    ckpt = load_checkpoint(str(out / "checkpoint.pth"))
    assert ckpt["iteration"] == 12 and ckpt["loss_network_random"] is True
    assert "UNTRAINED" in ckpt["loss_network"] and ckpt["versions"]["torch"] == torch.__version__
    # the final model is loadable by the models package and computes the same function
    model = sf.models.load(out / "model.pth")
    x = torch.rand(1, 3, 32, 32) * 255
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.model(x))


@pytest.mark.parametrize("arch,norm,workers", [("johnson", "fused", 1), ("texture", "batch", 0)])
def test_resume_gives_same_weights_as_uninterrupted(images, tmp_path, arch, norm, workers):
    full = train(_config(images, tmp_path / "full", arch=arch, norm=norm))
    part = train(_config(images, tmp_path / "part", arch=arch, norm=norm, stop_at=3))
    assert part.iteration == 3 and not (tmp_path / "part" / "model.pth").exists()
    # Disturb every RNG: the resumed run must restore them from the checkpoint.
    torch.manual_seed(999)
    resumed = train(_config(images, tmp_path / "part", arch=arch, norm=norm, resume=True,
                            workers=workers))
    assert resumed.iteration == 6 and resumed.history[0]["iteration"] == 4
    _assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    a = load_checkpoint(str(tmp_path / "full" / "checkpoint.pth"))
    b = load_checkpoint(str(tmp_path / "part" / "checkpoint.pth"))
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for ka, sa in a["optimizer"]["state"].items():
        sb = b["optimizer"]["state"][ka]
        for name in sa:
            assert torch.equal(sa[name], sb[name]), f"optimizer state {ka}.{name} differs"
    assert a["scheduler"] == b["scheduler"]
    assert [h["total"] for h in full.history[3:]] == [h["total"] for h in resumed.history]


def test_resume_refuses_different_settings_and_overwrite(images, tmp_path):
    train(_config(images, tmp_path / "r", iterations=2, norm="instance"))
    with pytest.raises(ValueError, match="--resume"):
        train(_config(images, tmp_path / "r", iterations=2, norm="instance"))
    with pytest.raises(ValueError, match=r"batch_size: checkpoint 2 vs now 3"):
        train(_config(images, tmp_path / "r", iterations=2, norm="instance", batch_size=3,
                      resume=True))


def test_failed_checkpoint_write_keeps_previous(images, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_save = torch.save

    def flaky_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: write some bytes, then fail
            f.write(b"partial checkpoint bytes")
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(trainer_mod.torch, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        train(_config(images, tmp_path / "c", norm="instance"))
    monkeypatch.setattr(trainer_mod.torch, "save", real_save)
    assert load_checkpoint(str(tmp_path / "c" / "checkpoint.pth"))["iteration"] == 2
    assert sorted(os.listdir(tmp_path / "c")) == ["checkpoint.pth", "samples", "train_log.jsonl"]
    resumed = train(_config(images, tmp_path / "c", norm="instance", resume=True))
    assert resumed.iteration == 6 and resumed.history[0]["iteration"] == 3


def test_kill_during_checkpoint_save_leaves_previous_loadable(tmp_path):
    path = tmp_path / "ckpt.pth"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from stylize_fast.training.trainer import atomic_save
        atomic_save({{"iteration": 1, "w": torch.arange(5.0)}}, {str(path)!r})
        real_fsync = os.fsync
        def die(fd):  # the new file is fully written but not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = die
        atomic_save({{"iteration": 2, "w": torch.zeros(1000000)}}, {str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          timeout=600)  # a hang guard only
    assert proc.returncode == -9, proc.stderr.decode()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["iteration"] == 1 and torch.equal(ckpt["w"], torch.arange(5.0))
    # the next save (after a restart) replaces it cleanly
    atomic_save({"iteration": 3}, str(path))
    assert torch.load(path, weights_only=True) == {"iteration": 3}


def spy_generator(monkeypatch) -> list[dict]:
    """Records, per training-mode forward of the generator the trainer builds, the autocast
    state and the layouts it ran with."""
    seen: list[dict] = []
    build = trainer_mod.build_generator

    def record(module, args):
        if module.training:  # not the no_grad sample forwards in eval mode
            conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d)
                        and m.weight.shape[1] > 1)
            seen.append({
                "autocast": torch.is_autocast_enabled("cpu"),
                "autocast_dtype": torch.get_autocast_dtype("cpu"),
                "input_channels_last": args[0].is_contiguous(memory_format=torch.channels_last)
                and not args[0].is_contiguous(),
                "weight_channels_last": conv.weight.is_contiguous(
                    memory_format=torch.channels_last)})

    def spied(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(record)
        return model

    monkeypatch.setattr(trainer_mod, "build_generator", spied)
    return seen


@pytest.mark.parametrize("options", [[], ["--amp", "--channels-last"]], ids=["plain", "amp-cl"])
def test_amp_bfloat16_channels_last_and_cli(images, tmp_path, monkeypatch, options):
    seen = spy_generator(monkeypatch)
    out = tmp_path / "cli"
    code = cli_main(["train", "--style", images["style"], "--data", images["data"],
                     "--output", str(out), "--iterations", "2", "--batch-size", "2",
                     "--image-size", "32", "--vgg-weights", "random", "--workers", "0",
                     *options, "--arch", "texture", "--norm", "instance",
                     "--preset", "johnson", "--style-layers", "relu1_2", "--no-progress"])
    assert code == 0
    on = bool(options)
    # Each training step ran the generator under bfloat16 autocast and in channels_last
    # (input and weights), or under neither without the options.
    assert len(seen) == 2
    for step in seen:
        assert step["autocast"] is on
        assert step["autocast_dtype"] == torch.bfloat16 or not on
        assert step["input_channels_last"] is on and step["weight_channels_last"] is on
    ckpt = load_checkpoint(str(out / "checkpoint.pth"))
    assert ckpt["config"]["amp"] == ("auto" if on else None)
    assert ckpt["config"]["channels_last"] is on
    assert ckpt["loss_config"]["tv_weight"] == 1e-6
    assert type(sf.models.load(out / "model.pth")).__name__ == "TextureNet"


def test_cli_reports_bad_input(images, tmp_path, capsys):
    code = cli_main(["train", "--style", str(tmp_path / "none.png"), "--data", images["data"],
                     "--output", str(tmp_path / "o"), "--vgg-weights", "random"])
    assert code == 1 and "--style" in capsys.readouterr().err
