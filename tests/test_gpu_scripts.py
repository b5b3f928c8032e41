"""The Python of the GPU check scripts, where it runs without a GPU: the ptxas resource report of
scripts/check_cuda_build.sh (scripts/ptxas_report.py) on a saved build-log excerpt, and the case
generator of the GPU sweep (scripts/gpu_sweep.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ptxas_report = _load("ptxas_report")
gpu_sweep = _load("gpu_sweep")

# Excerpt of a real build.log (nvcc 13.0, -Xptxas=-v, 2026-12-06): the float64 and float32 forward
# conv kernels on sm_80, float32 on sm_90; the float64 one's spill line edited from 0 / 0 / 0 to
# 8 / 4 / 4 bytes, to have a spill to find.
SAMPLE_LOG = (Path(__file__).parent / "data" / "ptxas_build_sample.log").read_text()


def test_ptxas_log_parsed_per_kernel_and_arch():
    rows = ptxas_report.parse_log(SAMPLE_LOG.splitlines())
    assert [(r["arch"], r["regs"], r["stack"], r["spill_st"], r["spill_ld"]) for r in rows] == [
        ("sm_80", 62, 8, 4, 4), ("sm_80", 40, 0, 0, 0), ("sm_90", 48, 0, 0, 0)]
    ptxas_report.name_kernels(rows)
    if rows[0]["kernel"] == rows[0]["mangled"]:
        pytest.skip("c++filt not available")
    assert [r["kernel"] for r in rows] == ["conv::padded_conv_fwd_kernel<double>",
                                           "conv::padded_conv_fwd_kernel<float>",
                                           "conv::padded_conv_fwd_kernel<float>"]


def test_ptxas_problems_name_the_spill_and_the_missing_arch():
    rows = ptxas_report.parse_log(SAMPLE_LOG.splitlines())
    for r in rows:
        r["kernel"] = r["mangled"][-20:]
    problems = ptxas_report.problems_in(rows, "8.0;9.0;10.0")
    assert len(problems) == 2
    assert "sm_80" in problems[0] and "stack frame 8 B, spill stores 4 B" in problems[0]
    assert problems[1].startswith("sm_100: requested")
    assert ptxas_report.problems_in(rows[1:], "8.0 9.0") == []
    assert ptxas_report.problems_in([], "8.0") [-1].startswith("no ptxas -v output")


def test_ptxas_warnings_ignore_the_flags_that_silence_them():
    lines = ["nvcc ... -Xcompiler=-Wno-unknown-pragmas", "x.cu(3): warning #177-D: unused",
             "ptxas warning : Registers are spilled", "all fine"]
    assert ptxas_report.warnings_in(lines) == lines[1:3]


def test_ptxas_report_writes_tsv_and_summary(tmp_path):
    (tmp_path / "build.log").write_text(SAMPLE_LOG)
    done = subprocess.run([sys.executable, str(SCRIPTS / "ptxas_report.py"), str(tmp_path), "12",
                           "8.0;9.0"], capture_output=True, text=True)
    assert done.returncode == 1  # the float64 kernel "spills"
    assert "PROBLEM: sm_80" in done.stdout
    tsv = (tmp_path / "ptxas.tsv").read_text().splitlines()
    assert len(tsv) == 4 and tsv[1].split("\t")[2:] == ["62", "8", "4", "4"]
    report = (tmp_path / "report.md").read_text()
    assert "3 kernels (1 per arch)" in report and "kernels with spills or a stack frame: 1" in report
    assert "| 2 | 40–62 | 48 | 8 |" in report  # 2 instances, register range per arch, worst spill


def test_requested_archs():
    assert ptxas_report.requested_archs("8.0;9.0") == {"sm_80", "sm_90"}
    assert ptxas_report.requested_archs("8.0 9.0+PTX, 10.0") == {"sm_80", "sm_90", "sm_100"}


def test_sweep_cases_reach_every_schedule_dtype_and_combination():
    sm = 132
    cases = gpu_sweep.cases(sm, quick=False)
    names = {c.name.split()[0] for c in cases}
    assert names == {"on_chip", "looped", "split"}
    assert {c.layout for c in cases} == {"contiguous", "channels_last", "strided"}
    assert {c.dtype for c in cases} == set(gpu_sweep.DTYPES)
    assert not [c for c in cases if c.misaligned and c.layout != "contiguous"]
    # small float32 contiguous shapes get every activation x affine x alignment
    small = [c for c in cases if c.shape == (2, 4, 32, 32) and c.dtype == torch.float32]
    assert len(small) == 3 * 3 * 2
    # big shapes and float64: three combinations each
    big = [c for c in cases if c.shape == (1, 32, 1024, 1024)]
    assert len(big) == 3 * len(gpu_sweep.DTYPES)
    # the looped NCHW shape has N*C >= 2*SMs planes
    looped = next(c for c in cases if c.name.startswith("looped NCHW"))
    assert looped.shape[0] * looped.shape[1] >= 2 * sm


def test_sweep_quick_keeps_only_small_shapes():
    quick = gpu_sweep.cases(8, quick=True)
    assert quick and all(gpu_sweep._numel(c.shape) <= 40000 for c in quick)
    assert len(quick) < len(gpu_sweep.cases(8, quick=False))


def test_sweep_runs_on_the_cpu_backend(tmp_path):
    """The sweep's own code (case runner, reference comparison, CSV) on the cpu backend, quick
    shapes: what a GPU machine runs, minus the GPU."""
    import csv
    import os

    out = tmp_path / "sweep.csv"
    env = dict(os.environ, SF_SWEEP_DEVICE="cpu", SF_SWEEP_BACKENDS="cpu", SF_SWEEP_QUICK="1")
    done = subprocess.run([sys.executable, str(SCRIPTS / "gpu_sweep.py"), str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(gpu_sweep.cases(4, quick=True))
    assert {r["status"] for r in rows} == {"ok"} and {r["backend"] for r in rows} == {"cpu"}
