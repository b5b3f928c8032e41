"""README tables generated from committed CSVs (stylize_fast.bench.tables): markers, columns per
area, idempotence, and the repository README's tables matching docs/results/*.csv."""

from __future__ import annotations

from pathlib import Path

import pytest

from stylize_fast.bench import report, tables

ROOT = Path(__file__).resolve().parents[1]


def _row(provider, backend, median, *, shape="1x32x64x64", alloc="pinned", baseline=0,
         is_copy=0, base_ms=2.0, copy_ms=0.5, **kw):
    return {"op": "instance_norm", "provider": provider, "backend": backend, "shape": shape,
            "params": "", "dtype": "float32", "layout": "contiguous", "mode": "inference",
            "allocator": alloc, "status": "ok", "median_ms": median, "p20_ms": median * 0.9,
            "p80_ms": median * 1.1, "ratio_to_baseline": median / base_ms,
            "ratio_to_copy": "" if is_copy else median / copy_ms, "baseline": baseline,
            "is_copy": is_copy, "cpu_model": "Test CPU", "device": "cpu (AVX2)", "threads": "2",
            "torch_version": "2.13.0", "stylize_fast_version": "0.1.0",
            "command": "python benchmarks/readme_results.py", "timestamp": "2026-12-06T01:00:00Z",
            **kw}


def _norm_rows():
    rows = []
    for alloc, ours in (("pinned", 0.6), ("default", 0.9)):
        rows += [_row("sf-cpu", "cpu", ours, alloc=alloc),
                 _row("InstanceNorm2d+ReLU", "torch", 2.0, alloc=alloc, baseline=1),
                 _row("group_norm+ReLU", "torch", 1.0, alloc=alloc),
                 _row("copy", "torch", 0.5, alloc=alloc, is_copy=1),
                 _row("sf-triton", "triton", 0.0, alloc=alloc, status="skipped: no GPU")]
    return rows


@pytest.fixture
def results(tmp_path):
    report.write_csv(str(tmp_path / "instance_norm.csv"), _norm_rows())
    return tmp_path


def test_instance_norm_table_columns_and_values(results):
    text = tables.render("instance_norm", report.read_csv(str(results / "instance_norm.csv")))
    lines = text.splitlines()
    assert "`python benchmarks/readme_results.py`" in lines[0] and "Test CPU" in lines[0]
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["shape", "dtype", "layout", "mode", "malloc", "sf-cpu × eager",
                      "sf-cpu × copy", "eager × copy", "eager ms"]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[4:]]
    assert len(body) == 2  # one line per allocator setting; the skipped provider adds none
    by_alloc = {r[4]: r for r in body}
    assert by_alloc["pinned"][5:] == ["0.30", "1.20", "4.00", "2.00"]
    assert by_alloc["default"][5:] == ["0.45", "1.80", "4.00", "2.00"]


def test_update_rewrites_between_markers_and_is_idempotent(results, tmp_path):
    md = tmp_path / "README.md"
    md.write_text("intro\n<!-- bench-table:instance_norm -->\nstale\n"
                  "<!-- /bench-table:instance_norm -->\noutro\n")
    assert tables.update_file(str(md), str(results)) == 0
    once = md.read_text()
    assert "stale" not in once and once.startswith("intro\n") and once.endswith("outro\n")
    assert "| 1x32x64x64 | float32 | NCHW | inference | pinned | 0.30 |" in once
    assert tables.update_file(str(md), str(results)) == 0
    assert md.read_text() == once
    assert tables.update_file(str(md), str(results), check=True) == 0
    md.write_text(once.replace("0.30", "0.31"))
    assert tables.update_file(str(md), str(results), check=True) == 1


def test_marker_without_csv_is_reported_and_left_alone(results):
    text = "<!-- bench-table:training -->\nkeep\n<!-- /bench-table:training -->\n"
    new, names, problems = tables.update_text(text, str(results))
    assert new == text and names == []
    assert len(problems) == 1 and "training.csv" in problems[0]


def test_readme_tables_match_their_csvs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if not tables.MARKERS.search(readme):
        pytest.skip("README.md has no <!-- bench-table:NAME --> markers yet")
    new, names, problems = tables.update_text(readme, str(ROOT / "docs" / "results"))
    assert not problems, problems
    assert names and new == readme, (
        "README tables differ from docs/results/*.csv: run "
        "python -m stylize_fast.bench.tables --update README.md")
