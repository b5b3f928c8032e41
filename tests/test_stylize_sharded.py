"""Stylising at scale: torchrun shards the inputs (each processed exactly once, the same pixels
as one process), outputs are written atomically, and a re-run after a kill finishes the rest
without redoing anything complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import stylize_fast as sf
from stylize_fast.inference import image_io
from stylize_fast.inference.shard import Shard, current_shard, select_jobs, shard_device

from .train_helpers import free_port

pytestmark = pytest.mark.usefixtures("one_thread")


def test_select_jobs_partitions_and_skips_done(tmp_path):
    jobs = [(f"in{i}.png", str(tmp_path / f"out{i}.png")) for i in range(7)]
    shares = [select_jobs(jobs, Shard(r, 3), skip_existing=False) for r in range(3)]
    assert sorted(j for s in shares for j in s.jobs) == sorted(jobs)  # exactly once
    assert [len(s.jobs) for s in shares] == [3, 2, 2]
    assert all(s.other_ranks == 7 - len(s.jobs) for s in shares)
    (tmp_path / "out3.png").write_bytes(b"done")
    share = select_jobs(jobs, Shard(0, 3), skip_existing=True)
    assert [dst for _, dst in share.jobs] == [str(tmp_path / "out0.png"),
                                               str(tmp_path / "out6.png")]
    assert share.already_done == [str(tmp_path / "out3.png")]
    assert len(select_jobs(jobs, Shard(0, 3), skip_existing=False).jobs) == 3


def test_current_shard_reads_torchrun_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert current_shard() == Shard(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    shard = current_shard()
    assert shard == Shard(3, 4, 1) and shard.distributed
    assert shard_device("cuda", shard) == "cuda:1" and shard_device("cpu", shard) == "cpu"
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="outside WORLD_SIZE"):
        current_shard()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        current_shard()


def test_image_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    image_io.write_image(target, np.full((8, 8, 3), 200.0, np.float32))
    before = target.read_bytes()

    def failing_save(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        image_io.write_image(target, np.zeros((8, 8, 3), np.float32))
    assert target.read_bytes() == before  # the previous output is untouched
    assert os.listdir(tmp_path) == ["out.png"]  # and no temporary file is left behind


def _make_folder(root, sizes, model):
    gen = np.random.default_rng(0)
    (root / "in").mkdir()
    for i in range(20):
        h, w = sizes[i % len(sizes)]
        base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        image = np.clip(base + gen.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "in" / f"img{i:02d}.png")
    sf.models.save(model, root / "model.pth")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """20 images of two sizes and a small model."""
    return _make_folder(tmp_path_factory.mktemp("sharded"), [(40, 40), (48, 64), (48, 64)],
                        sf.models.JohnsonNet(channels=8, num_residual=2))


@pytest.fixture(scope="module")
def slow_folder(tmp_path_factory):
    """20 images and the full-width JohnsonNet: a few seconds per rank, so that a kill lands
    while the job runs."""
    return _make_folder(tmp_path_factory.mktemp("sharded_slow"), [(192, 192)],
                        sf.models.JohnsonNet())


def _command(folder, out, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "stylize_fast",
            "stylize", "--model", str(folder / "model.pth"), "--input", str(folder / "in"),
            "--output", str(out), "--batch-size", "1", "--no-progress", *extra]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())


def _single(folder, out):
    from stylize_fast.cli import main

    assert main(["stylize", "--model", str(folder / "model.pth"), "--input",
                 str(folder / "in"), "--output", str(out), "--batch-size", "1",
                 "--no-progress"]) == 0


def _outputs(out) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in sorted(os.listdir(out))}


def test_torchrun_writes_each_output_once_like_one_process(folder, tmp_path):
    reference = tmp_path / "single"
    _single(folder, reference)
    out = tmp_path / "ddp"
    proc = subprocess.run(_command(folder, out), capture_output=True, text=True, timeout=300,
                          env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _outputs(out) == _outputs(reference)
    assert proc.stderr.count("rank 0/2") >= 1 and proc.stderr.count("rank 1/2") >= 1
    # a re-run skips every complete output and touches none of them
    stamps = {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}
    again = subprocess.run(_command(folder, out), capture_output=True, text=True, timeout=300,
                           env=_env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("10 already done") == 2  # each rank skips its 10
    assert {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out)} == stamps


def test_killed_run_finishes_on_rerun_without_redoing(slow_folder, tmp_path):
    folder = slow_folder
    reference = tmp_path / "single"
    _single(folder, reference)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_command(folder, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=_env(), start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        done = [n for n in os.listdir(out) if n.endswith(".png") and not n.startswith(".")] \
            if out.exists() else []
        if len(done) >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the job finished before it could be killed: make it slower"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    partial = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if not n.startswith(".")}
    for name in partial:  # whatever exists is complete
        with Image.open(out / name) as im:
            im.load()
    rerun = subprocess.run(_command(folder, out), capture_output=True, text=True, timeout=300,
                           env=_env())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    final = {n: b for n, b in _outputs(out).items() if not n.startswith(".")}
    assert final == _outputs(reference)
    for name, stamp in partial.items():  # nothing complete was redone
        assert os.stat(out / name).st_mtime_ns == stamp, name
    assert 4 <= len(partial) < 20


def test_overwrite_and_skip_existing_flags(folder, tmp_path):
    from stylize_fast.cli import main

    out = tmp_path / "flags"
    _single(folder, out)
    stamp = os.stat(out / "img00.png").st_mtime_ns
    time.sleep(0.01)
    args = ["stylize", "--model", str(folder / "model.pth"), "--input", str(folder / "in"),
            "--output", str(out), "--no-progress"]
    assert main([*args, "--skip-existing"]) == 0
    assert os.stat(out / "img00.png").st_mtime_ns == stamp
    assert main(args) == 0  # one process without the flag: everything is written again
    assert os.stat(out / "img00.png").st_mtime_ns != stamp
