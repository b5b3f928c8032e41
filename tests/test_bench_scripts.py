"""The benchmarks/bench_*.py front-ends end to end on tiny shapes: the one CSV layout, the flags
README names (--shapes, --csv, --quick, --threads, --repeats, --size, --arch)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

import stylize_fast as sf
from stylize_fast.bench import report

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.skipif(not sf.backends.available()["cpu"], reason="C++ extension not built")
def test_custom_shapes_write_rows(tmp_path):
    out = tmp_path / "rows.csv"
    result = _run("bench_instance_norm.py", "--shapes", "1x3x8x8,2x8x6x6", "--repeats", "1",
                  "--threads", "1", "--allocator", "pinned", "--csv", str(out))
    assert result.returncode == 0, result.stderr
    assert "1x3x8x8" in result.stdout and "2x8x6x6" in result.stdout
    with out.open(newline="") as f:
        assert tuple(next(csv.reader(f))) == report.CSV_COLUMNS
    rows = list(csv.DictReader(out.open()))
    cases = {(r["shape"], r["dtype"], r["layout"], r["mode"]) for r in rows}
    # 2 shapes x 3 (dtype, layout) configurations x 2 modes
    assert len(cases) == 12 and {c[0] for c in cases} == {"1x3x8x8", "2x8x6x6"}
    for case in cases:
        mine = {r["provider"]: r for r in rows
                if (r["shape"], r["dtype"], r["layout"], r["mode"]) == case}
        for name in ("sf-cpu", "InstanceNorm2d+ReLU", "copy"):
            assert mine[name]["status"] == "ok" and float(mine[name]["median_ms"]) > 0, case
        assert float(mine["InstanceNorm2d+ReLU"]["ratio_to_baseline"]) == pytest.approx(1.0)
    assert {r["allocator"] for r in rows} == {"pinned"}
    # --csv appends to a file of the same layout
    again = _run("bench_instance_norm.py", "--shapes", "1x3x8x8", "--repeats", "1", "--threads",
                 "1", "--allocator", "pinned", "--csv", str(out))
    assert again.returncode == 0, again.stderr
    assert len(list(csv.DictReader(out.open()))) == len(rows) + len(rows) // 2


@pytest.mark.parametrize("bad", ["4x8x256", "4x8x0x3", "axbxcxd"])
def test_bad_shapes_are_refused(bad):
    result = _run("bench_instance_norm.py", "--shapes", bad)
    assert result.returncode != 0
    assert "--shapes" in result.stderr and bad in result.stderr


@pytest.mark.parametrize(("script", "flags"), [
    ("bench_instance_norm.py", ("--csv", "--quick", "--threads", "--shapes", "--repeats")),
    ("bench_padded_conv.py", ("--threads", "--repeats", "--csv", "--no-memory")),
    ("bench_generators.py", ("--size", "--arch", "--threads", "--repeats", "--csv")),
    ("readme_results.py", ("--output", "--areas", "--threads", "--smoke")),
])
def test_scripts_keep_their_flags(script, flags):
    result = _run(script, "--help")
    assert result.returncode == 0, result.stderr
    for flag in flags:
        assert flag in result.stdout, (script, flag)


@pytest.mark.skipif(not sf.backends.available()["cpu"], reason="C++ extension not built")
def test_generators_script_tiny(tmp_path):
    out = tmp_path / "gen.csv"
    result = _run("bench_generators.py", "--size", "16", "--arch", "texture", "--repeats", "1",
                  "--threads", "1", "--allocator", "default", "--dtype", "float32",
                  "--csv", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    ok = {r["provider"] for r in rows if r["status"] == "ok"}
    assert {"fused", "instance"} <= ok and {r["allocator"] for r in rows} == {"default"}
    assert all(r["status"] == "ok" or r["status"].startswith(("skipped:", "error:"))
               for r in rows)


def test_csv_of_another_layout_is_refused(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("op,provider,shape\ninstance_norm,fused,1x1x1x1\n")
    result = _run("bench_instance_norm.py", "--shapes", "1x3x8x8", "--repeats", "1",
                  "--allocator", "pinned", "--csv", str(old))
    assert result.returncode != 0
    assert "other columns" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not sf.backends.available()["cpu"], reason="C++ extension not built")
def test_compare_builds_times_both_trees(tmp_path):
    """compare_builds.py with this checkout as both trees: one row per case, a ratio per tree,
    and a missing tree is refused naming it."""
    root = str(BENCHMARKS.parent)
    out = tmp_path / "cmp.csv"
    result = _run("compare_builds.py", root, root, "--smoke", "--processes", "1", "--repeats", "1",
                  "--csv", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 7
    for row in rows:
        assert float(row["baseline_ratio"]) > 0 and float(row["candidate_ratio"]) > 0
    bad = _run("compare_builds.py", str(tmp_path))
    assert bad.returncode != 0 and "baseline tree" in bad.stderr and "no stylize_fast" in bad.stderr


@pytest.mark.skipif(not sf.backends.available()["cpu"], reason="C++ extension not built")
def test_norm_on_load_script_tiny(tmp_path):
    out = tmp_path / "nol.csv"
    result = _run("bench_norm_on_load.py", "--size", "32", "--repeats", "1", "--threads", "1",
                  "--csv", str(out), "--no-plot")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert all(r["status"] == "ok" for r in rows)
    edges = [r for r in rows if r["op"] == "norm_on_load edge"]
    assert len(edges) == 5 * 3 and {r["provider"] for r in edges} == {
        "per-layer", "norm-on-load", "norm-on-load + stats"}
    model = {r["provider"]: r for r in rows if r["op"] == "generator"}
    assert set(model) == {"fused (normalize-on-load)", "fused per-layer norm", "eager float32"}
    assert float(model["eager float32"]["ratio_to_baseline"]) == 1.0


def test_bytes_moved_model():
    from stylize_fast.bench import bytes_moved

    rows = bytes_moved.table(512)
    assert len(rows) == 15  # JohnsonNet's norms: in1-in5 and two per residual block
    for r in rows:
        assert r["norm_on_load"] < r["fused"] <= r["eager"], r
    total = {k: sum(r[k] for r in rows) for k in ("eager", "fused", "norm_on_load")}
    assert total["norm_on_load"] / total["fused"] < 0.6
    assert "| **total** |" in bytes_moved.markdown(512)


def test_winograd_bf16_accuracy_experiment():
    """docs/experiments.md section 3: rounding F(4x4, 3x3)'s transformed operands to bfloat16
    is several times worse than a bfloat16 direct convolution; F(2x2, 3x3) is not."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "winograd_bf16_accuracy.py")
    spec = importlib.util.spec_from_file_location("winograd_bf16_accuracy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(channels=32, size=32)
    direct = result["direct, bf16 input and weights"][1]
    assert result["F(4x4,3x3), float32 V and U"][1] < 1e-5
    assert result["F(4x4,3x3), bf16 V and U"][1] > 4 * direct
    assert result["F(2x2,3x3), bf16 V and U"][1] < 3 * direct
