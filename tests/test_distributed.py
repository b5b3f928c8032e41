"""DDP on CPU: 2 gloo ranks on 127.0.0.1 train a few iterations; replicas stay identical, only
rank 0 writes files, and the result matches one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from stylize_fast.training.data import synthetic_images, synthetic_style
from stylize_fast.training.trainer import TrainConfig, train

from .train_helpers import free_port, train_on_ranks


def _config(root, output, **kw) -> TrainConfig:
    base = dict(style=str(root / "style.png"), data=str(root / "data"), output=str(output),
                arch="johnson", norm="instance", iterations=3, batch_size=1, image_size=32,
                vgg_weights="random", checkpoint_every=2, seed=11, workers=0, sample_every=2,
                log_every=1, progress=False, style_layers="relu1_2,relu2_2")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    synthetic_images(root / "data", 5, 40, seed=2)
    synthetic_style(root / "style.png", 40, seed=3)
    return root


def test_two_cpu_ranks_stay_identical_and_match_single_process(root):
    out = root / "ddp_run"
    r0, r1 = train_on_ranks(_config(root, out), root / "ranks")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
    # only rank 0 writes: one checkpoint, one model, samples; no stray per-rank files
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pth", "model.pth", "samples",
                                                     "train_log.jsonl"]
    # 2 ranks x batch 1 see exactly the samples of 1 process x batch 2, and with instance norm
    # and mean-reduced losses the rank-averaged loss is the single-process loss. (Weights are
    # not compared: Adam's first steps turn rounding noise in near-zero gradients -- e.g. conv
    # biases in front of instance norm, whose true gradient is 0 -- into +-lr updates.)
    torch.set_num_threads(1)
    single = train(_config(root, root / "single", batch_size=2))
    ddp_log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in ddp_log] == [1, 2, 3]
    for e, s in zip(ddp_log, single.history):
        for term in ("content", "style", "total"):
            assert e[term] == pytest.approx(s[term], rel=1e-4), (e, s)
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["iteration"] == 3


def test_torchrun_runs_the_train_command(root, tmp_path):
    out = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "stylize_fast",
           "train", "--style", str(root / "style.png"), "--data", str(root / "data"),
           "--output", str(out), "--iterations", "2", "--batch-size", "1", "--image-size", "32",
           "--vgg-weights", "random", "--workers", "0", "--norm", "batch",
           "--style-layers", "relu1_2", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["iteration"] == 2 and (out / "model.pth").is_file()
