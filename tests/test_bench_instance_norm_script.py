"""benchmarks/bench_instance_norm.py end to end on tiny shapes: table, CSV rows, --shapes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

import stylize_fast as sf

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_instance_norm.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.skipif(not sf.backends.available()["cpu"], reason="C++ extension not built")
def test_custom_shapes_write_rows(tmp_path):
    out = tmp_path / "rows.csv"
    result = _run("--shapes", "1x3x8x8,2x8x6x6", "--repeats", "1", "--threads", "1",
                  "--csv", str(out))
    assert result.returncode == 0, result.stderr
    assert "1x3x8x8" in result.stdout and "2x8x6x6" in result.stdout
    rows = list(csv.DictReader(out.open()))
    # 2 shapes x 3 (dtype, layout) configurations x 6 (provider, mode) pairs
    assert len(rows) == 36
    assert {r["shape"] for r in rows} == {"1x3x8x8", "2x8x6x6"}
    assert all(float(r["median_ms"]) > 0 for r in rows)


@pytest.mark.parametrize("bad", ["4x8x256", "4x8x0x3", "axbxcxd"])
def test_bad_shapes_are_refused(bad):
    result = _run("--shapes", bad)
    assert result.returncode != 0
    assert "--shapes" in result.stderr and bad in result.stderr
