"""Training data path and defaults: the data-wait measurement, the decoded-image cache (bitwise the
same batches as decoding per item), persistent workers and the cache under --resume, the
channels_last default for fused generators, and float32 master state under --amp."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

import stylize_fast as sf
from stylize_fast.cli import main as cli_main
from stylize_fast.training import data as data_mod
from stylize_fast.training import trainer as trainer_mod
from stylize_fast.training.data import (
    ContentImages,
    DecodedImages,
    ResumableBatchSampler,
    find_images,
    synthetic_images,
    synthetic_style,
)
from stylize_fast.training.loop import DataWait
from stylize_fast.training.trainer import TrainConfig, load_checkpoint, train

from .train_helpers import assert_same_state, tiny_config

needs_extension = pytest.mark.skipif(not sf.backends.available()["cpu"],
                                     reason="C++ extension not built")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six images of different sizes and aspect ratios, and one whose header reads but whose
    pixels are cut off (it fails at decode, not in find_images)."""
    root = tmp_path_factory.mktemp("train_data")
    data = root / "data"
    for i, size in enumerate((40, 52, 36)):
        synthetic_images(data / f"s{i}", 2, size, seed=i, prefix=f"img{i}")
    from PIL import Image

    Image.open(data / "s1" / "img1_0001.png").crop((0, 0, 52, 30)).save(data / "s1" / "wide.png")
    good = (data / "s0" / "img0_0000.png").read_bytes()
    (data / "s0" / "cut.png").write_bytes(good[:len(good) // 3])
    style = synthetic_style(root / "style.png", 48, seed=7)
    return {"data": str(data), "style": style}


def _config(images, output, **kw) -> TrainConfig:
    return tiny_config(images, output, **{**dict(seed=5, sample_every=6, log_every=2), **kw})


_assert_same_state = assert_same_state


# ---------------------------------------------------------------------------------------------
# Data wait


def test_data_wait_window_and_smoothing():
    wait = DataWait(smoothing=0.5)
    assert wait.window_fraction() == 0.0 and wait.smoothed_fraction() == 0.0
    wait.add(1.0, 4.0)
    wait.add(3.0, 4.0)
    assert wait.window_fraction() == pytest.approx(4.0 / 8.0)
    # smoothed: data 1 -> 2, total 4 -> 4
    assert wait.smoothed_fraction() == pytest.approx(2.0 / 4.0)
    wait.new_window()
    wait.add(0.0, 2.0)
    assert wait.window_fraction() == 0.0
    assert wait.smoothed_fraction() == pytest.approx(1.0 / 3.0)  # data 2 -> 1, total 4 -> 3
    wait.add(5.0, 4.0)  # an iteration never counts as shorter than its data wait
    assert wait.window_fraction() == pytest.approx(5.0 / 7.0)
    wait.new_window()
    wait.add(5.0, 4.0)
    assert wait.window_fraction() == 1.0


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_log_history_and_progress_bar_report_data_wait(images, tmp_path, capsys):
    result = train(_config(images, tmp_path / "run", progress=True, log_every=2))
    assert len(result.history) == 6
    for h in result.history:
        assert 0.0 <= h["data_seconds"] <= h["seconds"]
        assert 0.0 <= h["data_fraction"] <= 1.0
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text()
           .splitlines()]
    assert [e["iteration"] for e in log] == [2, 4, 6]
    for e in log:
        # the fraction covers the log window: the two iterations since the previous line
        window = result.history[e["iteration"] - 2:e["iteration"]]
        want = sum(h["data_seconds"] for h in window) / sum(h["seconds"] for h in window)
        assert e["data_fraction"] == pytest.approx(want, rel=1e-9)
        assert e["data_seconds"] == result.history[e["iteration"] - 1]["data_seconds"]
    err = capsys.readouterr().err
    assert "data=" in err and "%" in err.split("data=")[-1][:5]
    assert "data wait: " in err and "of the step time (6 iterations, 0 workers, decoded cache)" in err


# ---------------------------------------------------------------------------------------------
# Decoded-image cache


def test_cache_gives_bitwise_the_items_of_decoding(images):
    files, skipped = find_images(images["data"])
    assert skipped == 0 and len(files) == 8
    with pytest.warns(RuntimeWarning, match="cut.png"):
        cache = DecodedImages.build(files, 24, threads=2)
    assert cache.bad.tolist() == [f.endswith("cut.png") for f in files]
    assert cache.pixels.dtype == torch.uint8 and cache.pixels.dim() == 1
    assert cache.nbytes == DecodedImages.decoded_bytes(files, 24)
    plain, cached = ContentImages(files, 24), ContentImages(files, 24, cache=cache)
    for index in range(len(files)):
        for seed in (None, 0, 12345, 2**62 + 3):
            cut = files[index].endswith("cut.png")
            with pytest.warns(RuntimeWarning) if cut else contextlib.nullcontext():
                want = plain[(index, seed)]
            got = cached[(index, seed)]
            assert got.dtype == torch.float32 and got.shape == (3, 24, 24)
            assert torch.equal(got, want), (files[index], seed)
    # the cut file is replaced by the next decodable one, in both
    cut = next(i for i, f in enumerate(files) if f.endswith("cut.png"))
    assert torch.equal(cached[(cut, 7)], plain[((cut + 1) % len(files), 7)])


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
@pytest.mark.parametrize("workers,start_method", [(0, None), (2, "fork"), (1, "spawn")])
def test_cached_and_uncached_loaders_give_identical_batches(images, workers, start_method):
    files, _ = find_images(images["data"])
    cache = DecodedImages.build(files, 32)
    if start_method == "spawn":  # the workers get a shared-memory handle, not a pickled copy
        cache.share_memory_()
        assert cache.pixels.is_shared()
    batches = {}
    for name, ds in (("plain", ContentImages(files, 32)), ("cached", ContentImages(files, 32, cache))):
        sampler = ResumableBatchSampler(len(files), 3, seed=9, start=0, stop=7)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers,
                                             persistent_workers=workers > 0,
                                             multiprocessing_context=start_method)
        batches[name] = list(loader)
    assert len(batches["plain"]) == 7
    for a, b in zip(batches["plain"], batches["cached"]):
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_training_with_and_without_cache_is_identical(images, tmp_path, monkeypatch):
    decodes = []
    real = data_mod._decode_resized
    monkeypatch.setattr(data_mod, "_decode_resized",
                        lambda path, size: decodes.append(path) or real(path, size))
    files, _ = find_images(images["data"])
    cached = train(_config(images, tmp_path / "cached"))
    assert len(decodes) == len(files)  # each file once, into the cache; none per item
    decodes.clear()
    with sf.config.override(train_cache_mb=0):
        plain = train(_config(images, tmp_path / "plain"))
    assert len(decodes) >= 6 * 2  # every item of every batch decoded
    _assert_same_state(cached.model.state_dict(), plain.model.state_dict())
    assert [h["total"] for h in cached.history] == [h["total"] for h in plain.history]


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_cache_is_skipped_over_budget(images, tmp_path, monkeypatch):
    built = []
    real = DecodedImages.build
    monkeypatch.setattr(DecodedImages, "build", lambda *a, **k: built.append(a) or real(*a, **k))
    files, _ = find_images(images["data"])
    need = DecodedImages.decoded_bytes(files, 32)
    info = trainer_mod.ddp.DistInfo()
    with sf.config.override(train_cache_mb=1):  # 1 MiB: more than these images need
        assert need < 2**20
        trainer_mod.make_dataset(files, 32, 0, info)
    assert len(built) == 1
    assert DecodedImages.decoded_bytes(files, 32, limit=100) < need  # stops early
    monkeypatch.setattr(DecodedImages, "decoded_bytes",
                        staticmethod(lambda f, s, limit=None: 2**20 + 1))
    with sf.config.override(train_cache_mb=1):
        ds = trainer_mod.make_dataset(files, 32, 0, info)
    assert ds.cache is None and len(built) == 1
    with sf.config.override(train_cache_mb=0):
        assert trainer_mod.make_dataset(files, 32, 0, info).cache is None
    assert trainer_mod.cache_budget_bytes() == 1024 * 2**20  # unset: the default


# ---------------------------------------------------------------------------------------------
# Resume with the cache and with persistent workers


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
@pytest.mark.parametrize("cache_mb,workers", [(None, 0), (None, 1), (0, 1)],
                         ids=["cache", "cache-workers", "workers"])
def test_resume_reproduces_uninterrupted_run(images, tmp_path, cache_mb, workers):
    with sf.config.override(train_cache_mb=cache_mb):
        full = train(_config(images, tmp_path / "full", workers=workers))
        part = train(_config(images, tmp_path / "part", workers=workers, stop_at=3))
        assert part.iteration == 3
        torch.manual_seed(1234)
        resumed = train(_config(images, tmp_path / "part", workers=workers, resume=True))
    assert resumed.iteration == 6 and resumed.history[0]["iteration"] == 4
    _assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    assert [h["total"] for h in full.history[3:]] == [h["total"] for h in resumed.history]
    a = load_checkpoint(str(tmp_path / "full" / "checkpoint.pth"))
    b = load_checkpoint(str(tmp_path / "part" / "checkpoint.pth"))
    for ka, sa in a["optimizer"]["state"].items():
        for name in sa:
            assert torch.equal(sa[name], b["optimizer"]["state"][ka][name])


# ---------------------------------------------------------------------------------------------
# channels_last default


def _spy(monkeypatch) -> list[dict]:
    seen: list[dict] = []
    build = trainer_mod.build_generator

    def record(module, args, output):
        if module.training:
            x = args[0]
            seen.append({"input_cl": x.is_contiguous(memory_format=torch.channels_last)
                         and not x.is_contiguous(),
                         "autocast": torch.is_autocast_enabled("cpu"),
                         "autocast_dtype": torch.get_autocast_dtype("cpu"),
                         "output_dtype": output.dtype})

    def spied(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_hook(record)
        return model

    monkeypatch.setattr(trainer_mod, "build_generator", spied)
    return seen


def _cli(images, out, *options) -> int:
    return cli_main(["train", "--style", images["style"], "--data", images["data"],
                     "--output", str(out), "--iterations", "2", "--batch-size", "2",
                     "--image-size", "32", "--vgg-weights", "random", "--workers", "0",
                     "--preset", "johnson", "--style-layers", "relu1_2", "--no-progress",
                     *options])


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
@pytest.mark.parametrize("options,on", [([], True), (["--no-channels-last"], False),
                                        (["--norm", "instance"], False),
                                        (["--norm", "instance", "--channels-last"], True)],
                         ids=["fused", "fused-off", "instance", "instance-on"])
def test_channels_last_default_on_for_fused(images, tmp_path, monkeypatch, options, on):
    seen = _spy(monkeypatch)
    assert _cli(images, tmp_path / "o", *options) == 0
    assert [s["input_cl"] for s in seen] == [on, on]
    assert load_checkpoint(str(tmp_path / "o" / "checkpoint.pth"))["config"]["channels_last"] is on


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_resume_keeps_the_checkpoints_layout(images, tmp_path, monkeypatch):
    # A run started NCHW (e.g. before channels_last became the default) resumes NCHW when the
    # flag is not given, and an explicit contrary flag is refused as a different run.
    train(_config(images, tmp_path / "r", channels_last=False, stop_at=2))
    seen = _spy(monkeypatch)
    resumed = train(_config(images, tmp_path / "r", resume=True))
    assert resumed.iteration == 6 and seen and not any(s["input_cl"] for s in seen)
    train(_config(images, tmp_path / "s", stop_at=2))
    with pytest.raises(ValueError, match="channels_last: checkpoint True vs now False"):
        train(_config(images, tmp_path / "s", resume=True, channels_last=False))


# ---------------------------------------------------------------------------------------------
# AMP


def test_amp_auto_follows_the_cpus_bfloat16_support(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(trainer_mod, "cpu_bfloat16_level", lambda: "avx512_bf16")
    assert trainer_mod.resolve_amp("auto", cpu) == "bfloat16"
    monkeypatch.setattr(trainer_mod, "cpu_bfloat16_level", lambda: None)
    assert trainer_mod.resolve_amp("auto", cpu) is None
    assert trainer_mod.resolve_amp("bfloat16", cpu) == "bfloat16"  # explicit: as given
    assert trainer_mod.resolve_amp("auto", cuda) == "float16"
    assert trainer_mod.resolve_amp(None, cpu) is None


@needs_extension
def test_cpu_bfloat16_level_reads_the_kernels_isa():
    best = torch.ops.stylize_fast.instance_norm_cpu_isa()
    assert trainer_mod.cpu_bfloat16_level() == (best if best == "avx512_bf16" else None)
    with sf.config.override(cpu_isa="avx512"):  # capped below AVX512-BF16
        assert trainer_mod.cpu_bfloat16_level() is None


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_amp_keeps_weights_optimizer_state_and_losses_float32(images, tmp_path, monkeypatch):
    seen = _spy(monkeypatch)
    terms_seen: list[dict] = []
    real_loss = trainer_mod.PerceptualLoss

    class RecordingLoss(real_loss):
        def forward(self, output, content):
            terms = super().forward(output, content)
            terms_seen.append({k: v.dtype for k, v in terms.items()})
            return terms

    monkeypatch.setattr(trainer_mod, "PerceptualLoss", RecordingLoss)
    result = train(_config(images, tmp_path / "amp", amp="bfloat16", iterations=2))
    # the step ran in bfloat16 ...
    assert seen and all(s["autocast"] and s["autocast_dtype"] == torch.bfloat16 for s in seen)
    assert all(s["output_dtype"] == torch.bfloat16 for s in seen)
    # ... with float32 loss terms, master weights and Adam state
    assert terms_seen and all(set(t.values()) == {torch.float32} for t in terms_seen)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    ckpt = load_checkpoint(str(tmp_path / "amp" / "checkpoint.pth"))
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
    state = ckpt["optimizer"]["state"]
    assert len(state) == len(list(result.model.parameters()))
    for s in state.values():
        assert s["exp_avg"].dtype == torch.float32 and s["exp_avg_sq"].dtype == torch.float32


def test_workers_default_leaves_a_core_for_the_step(monkeypatch):
    for cpus, want in ((1, 0), (2, 1), (3, 2), (64, 2)):
        monkeypatch.setattr(trainer_mod.os, "cpu_count", lambda c=cpus: c)
        assert trainer_mod.default_workers() == want
    assert TrainConfig(style="s", data="d", output="o").workers == trainer_mod.default_workers()
    with pytest.raises(ValueError, match="--workers"):
        TrainConfig(style="s", data="d", output="o", workers=-1)


def test_cli_workers_and_channels_last_flags():
    import argparse

    from stylize_fast.commands import train as train_cmd

    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    base = ["--style", "s", "--data", "d", "--output", "o"]
    cfg = train_cmd.config_from_args(parser.parse_args(base))
    assert cfg.channels_last is None and cfg.workers == trainer_mod.default_workers()
    assert train_cmd.config_from_args(parser.parse_args(base + ["--no-channels-last"])) \
        .channels_last is False
    assert train_cmd.config_from_args(parser.parse_args(base + ["--workers", "0"])).workers == 0
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--workers", "-1"])



@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_amp_gram_matrices_are_float32(images, tmp_path, monkeypatch):
    from stylize_fast.training import losses as losses_mod

    grams: list[torch.dtype] = []
    real = losses_mod.gram_matrix
    monkeypatch.setattr(losses_mod, "gram_matrix",
                        lambda f: grams.append(real(f).dtype) or real(f))
    train(_config(images, tmp_path / "amp", amp="bfloat16", iterations=1, checkpoint_every=1))
    assert grams and set(grams) == {torch.float32}
