"""The benchmark machinery on a tiny case list: CSV schema and rows, PNG validity, timing
statistics, allocator handling, missing optional packages and the CLI. Speed itself is never
asserted here."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest
import torch

from stylize_fast import bench
from stylize_fast.bench import allocator, generators, report, suite, timing
from stylize_fast.bench.suite import Case


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cases = suite.tiny() + [Case("generator", (1, 3, 32, 32), params=(("arch", "johnson"),))]
    # pin_allocator=False: leave this test process's malloc alone.
    result = bench.run_bench(cases, str(out), repeats=3, warmup=1, isolate=False,
                             pin_allocator=False, log=lambda s: None)
    return out, result, cases


def test_csv_header_and_rows(tiny_run):
    out, result, cases = tiny_run
    path = out / "results.csv"
    assert result.files["csv"] == str(path)
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        body = list(reader)
    assert tuple(header) == report.CSV_COLUMNS
    assert all(len(r) == len(header) for r in body)
    rows = [dict(zip(header, r)) for r in body]
    for case in (c for c in cases if c.op != "generator"):
        mine = [r for r in rows if (r["op"], r["shape"], r["mode"]) ==
                (case.op, case.shape_str, case.mode)]
        ok = {r["provider"]: r for r in mine if r["status"] == "ok"}
        # The PyTorch baseline and the copy always run; every row states its status.
        assert {"copy"} <= set(ok) and any(r["baseline"] == "1" for r in ok.values()), mine
        assert all(r["status"] == "ok" or r["status"].startswith(("skipped:", "error:"))
                   for r in mine)
        base = next(r for r in ok.values() if r["baseline"] == "1")
        assert float(base["ratio_to_baseline"]) == pytest.approx(1.0)
        for r in ok.values():
            p20, med, p80 = float(r["p20_ms"]), float(r["median_ms"]), float(r["p80_ms"])
            assert 0 < p20 <= med <= p80, r
            assert int(r["repeats"]) == 3
            assert float(r["gbps"]) > 0
            if r["provider"] != "copy":
                assert float(r["ratio_to_copy"]) == pytest.approx(
                    med / float(ok["copy"]["median_ms"]), rel=1e-4)
    for r in rows:  # machine columns filled in every row
        for col in ("device", "cpu_model", "threads", "torch_version", "allocator",
                    "timestamp", "backends_available"):
            assert r[col], (col, r)
        assert r["torch_version"] == torch.__version__
        assert r["allocator"] == allocator.short() and r["allocator"] in ("pinned", "default")
        assert r["allocator_detail"] == allocator.setting()
        assert r["command"]


def test_generator_rows_present_or_skipped(tiny_run):
    _, result, _ = tiny_run
    gen = [r for r in result.rows if r["op"] == "generator"]
    assert {r["provider"] for r in gen} >= {"fused", "instance"}
    for r in gen:
        assert r["status"] == "ok" or r["status"].startswith("skipped:"), r
    if any(r["status"] == "ok" for r in gen):
        cats = {r["category"] for r in result.profile_rows}
        assert cats == set(generators.PROFILE_CATEGORIES)


def test_plots_are_png(tiny_run):
    out, result, _ = tiny_run
    from PIL import Image

    for op in ("instance_norm", "padded_conv2d"):
        path = out / f"{op}.png"
        assert result.files[f"plot_{op}"] == str(path)
        data = path.read_bytes()
        assert data.startswith(report.PNG_SIGNATURE)
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_quantile_matches_numpy_default():
    import numpy as np

    vals = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for q in (0.0, 0.2, 0.5, 0.8, 1.0):
        assert timing.quantile(vals, q) == pytest.approx(np.quantile(vals, q))
    assert math.isnan(timing.quantile([], 0.5))


def test_measure_interleaves_and_reports_errors():
    calls: list[str] = []

    def make(name):
        return lambda: calls.append(name)

    def broken():
        raise RuntimeError("kaput")

    res = timing.measure({"a": make("a"), "b": make("b"), "bad": broken}, warmup=0, repeats=4)
    assert isinstance(res["bad"], RuntimeError)
    assert res["a"].repeats == 4 and res["b"].repeats == 4
    sampled = calls[2:]  # after the two first calls
    # One call of each per round; round r starts at provider r % 2: a b, b a, a b, b a.
    assert sampled == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert all(len(t.samples) == 4 for t in (res["a"], res["b"]))


def test_measure_budget_limits_repeats():
    import time

    res = timing.measure({"sleep": lambda: time.sleep(0.01)}, warmup=0, repeats=100,
                         budget_s=0.05, min_repeats=3)
    assert 3 <= res["sleep"].repeats <= 10
    assert res["sleep"].median >= 0.009


def test_rotation_count():
    assert timing.rotation_count(1 << 20, 32 << 20) == 16  # capped
    assert timing.rotation_count(40 << 20, 32 << 20) == 2
    assert timing.rotation_count(100 << 20, 32 << 20) == 1


def test_case_validation():
    with pytest.raises(ValueError, match="mode"):
        Case("instance_norm", (1, 2, 3, 4), mode="sideways")
    with pytest.raises(ValueError, match="shape"):
        Case("instance_norm", (1, 2, 3))
    c = Case("padded_conv2d", (1, 4, 8, 8), params=suite.conv_params(8, 3))
    assert Case.from_json(c.to_json()) == c


def test_suites_are_consistent():
    quick, full = suite.quick(), suite.full()
    assert len(quick) < len(full)
    assert {c.op for c in full} == set(suite.OPS)
    assert {c.mode for c in full if c.op == "instance_norm"} == set(suite.MODES)
    assert {c.layout for c in full if c.op == "instance_norm"} == set(suite.LAYOUTS)
    assert any(c.op == "generator" for c in quick)
    assert any(c.op == "train" for c in quick)
    assert {c.dtype for c in full if c.op == "train"} == {"float32", "bfloat16"}


def test_allocator_subprocess_env():
    env = allocator.subprocess_env("pinned")
    assert env["MALLOC_MMAP_MAX_"] == "0" and "MALLOC_TRIM_THRESHOLD_" in env
    env = allocator.subprocess_env("default")
    assert "MALLOC_MMAP_MAX_" not in env
    with pytest.raises(ValueError, match="allocator setting"):
        allocator.apply("fast")


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "stylize_fast", "bench", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--full", "--output", "--device", "--ops", "--dtype", "--repeats",
                 "--quick-only", "--no-plot", "--allocator", "--memory"):
        assert flag in proc.stdout


def test_cli_rejects_bad_ops(capsys):
    from stylize_fast.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--ops", "softmax"])
    assert "instance_norm" in capsys.readouterr().err


def test_every_case_runs_under_each_allocator_setting():
    cases = [Case("instance_norm", (1, 4, 8, 8)),
             Case("generator", (1, 3, 32, 32), params=(("arch", "texture"),))]
    result = bench.run_bench(cases, None, repeats=2, warmup=0, log=lambda s: None,
                             allocators=("pinned", "default"), profile_generators=False)
    for op in ("instance_norm", "generator"):
        rows = [r for r in result.rows if r["op"] == op]
        assert {r["allocator"] for r in rows} == {"pinned", "default"}, op
        details = {r["allocator"]: r["allocator_detail"] for r in rows}
        assert details["pinned"].startswith("pinned") and details["default"].startswith("default")
        # Ratios are taken within one setting: each setting's baseline is 1.
        for setting in ("pinned", "default"):
            base = [r for r in rows if r["allocator"] == setting and r.get("baseline") == 1
                    and r["status"] == "ok"]
            assert len(base) == 1 and base[0]["ratio_to_baseline"] == pytest.approx(1.0)


def test_missing_optional_packages_give_one_line_each():
    rows = [{"op": "generator", "provider": p, "status": "skipped: onnxruntime is not installed"}
            for p in ("onnxruntime",) * 3] + \
           [{"op": "instance_norm", "provider": "sf-triton", "status": "skipped: no CUDA device"}]
    lines = report.skipped_summary(rows)
    assert lines == ["not measured (onnxruntime): onnxruntime is not installed",
                     "not measured (sf-triton): no CUDA device"]


def test_without_matplotlib_the_csv_is_written_and_one_line_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "_pyplot", lambda: None)
    logs: list[str] = []
    rows = [{"op": "instance_norm", "provider": "copy", "shape": "1x1x1x1", "status": "ok"}]
    files = bench.write_outputs(rows, [], str(tmp_path), log=logs.append)
    assert set(files) == {"csv"} and (tmp_path / "results.csv").exists()
    assert logs == [report.PLOT_HINT] and "pip install matplotlib" in logs[0]


def test_bar_chart_shows_ours_eager_compile_not_the_other_variants():
    def row(provider, backend, **kw):
        return {"op": "padded_conv2d", "provider": provider, "backend": backend, "status": "ok",
                "is_copy": "0", "baseline": "0", **kw}

    assert report.plotted(row("sf-cpu", "cpu"))
    assert report.plotted(row("F.pad+conv2d", "torch", baseline="1"))
    assert report.plotted(row("compiled F.pad+conv2d", "inductor"))
    assert not report.plotted(row("Conv2d(padding_mode)", "torch"))
    assert not report.plotted(row("sf-reference", "reference"))
    assert not report.plotted(row("copy", "torch", is_copy="1"))
    assert not report.plotted(row("sf-cpu", "cpu", status="skipped: x"))


def test_sweeps_need_three_sizes():
    def row(size, alloc="pinned"):
        return {"op": "generator", "provider": "fused", "backend": "cpu", "status": "ok",
                "shape": f"1x3x{size}x{size}", "params": "arch=johnson", "dtype": "float32",
                "layout": "contiguous", "mode": "inference", "allocator": alloc,
                "baseline": "0", "is_copy": "0"}

    assert report.sweeps([row(256), row(512)]) == {}
    found = report.sweeps([row(256), row(512), row(1024), row(256, "default")])
    assert len(found) == 1 and len(next(iter(found.values()))) == 3


def test_time_limit_stops_starting_cases():
    from stylize_fast.bench import runner

    logs: list[str] = []
    rows, profile_rows = runner.run_cases(suite.tiny(), deadline=0.0, log=logs.append)
    assert rows == [] and profile_rows == []
    assert any("not run" in line for line in logs)


def test_cli_compile_ops_parses():
    from stylize_fast.cli import build_parser

    args = build_parser().parse_args(["bench", "--compile-ops", "generator,instance_norm",
                                      "--time-limit", "5", "--threads", "1"])
    assert args.compile_ops == ["generator", "instance_norm"] and args.time_limit == 5.0


def test_cli_ops_are_the_suite_ops():
    from stylize_fast.commands import bench as bench_command

    assert bench_command._OPS == suite.OPS


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_step_providers(dtype):
    """``--ops train``: the examples step (float32) is the baseline; a bfloat16 case adds the
    examples step under autocast; ours runs the fused model; every step really trains (the
    generator's weights get gradients) and each provider's row is timed."""
    from stylize_fast.bench import train

    case = Case("train", (1, 3, 32, 32), dtype, "contiguous", "forward+backward",
                (("arch", "johnson"),))
    provs = {p.name: p for p in train.providers(case, "cpu")}
    expected = {"examples", "sf fused"} | ({"examples + bfloat16 autocast"}
                                            if dtype == "bfloat16" else set())
    assert set(provs) == expected
    assert [p.name for p in provs.values() if p.baseline] == ["examples"]
    fused = provs["sf fused"].build()
    loss = fused.step()
    assert torch.isfinite(loss)
    grads = [p.grad for p in fused.module.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(type(m).__name__ == "FusedInstanceNorm2d" for m in fused.module.modules())
    result = bench.run_bench([case], None, repeats=2, warmup=0, isolate=False,
                             pin_allocator=False, log=lambda s: None)
    rows = {r["provider"]: r for r in result.rows}
    assert set(rows) == expected
    assert all(r["status"] == "ok" and float(r["median_ms"]) > 0 for r in rows.values())
    assert float(rows["examples"]["ratio_to_baseline"]) == 1.0


@pytest.mark.parametrize("arch", ["johnson", "texture"])
def test_training_step_split_and_configuration(arch):
    """Ours runs the configuration `stylize-fast train` uses (fused generator, the loss network on
    the package kernels, channels_last), the baseline the examples' eager one; the split of a
    step covers every phase and the run writes it as profile rows for the train op."""
    from stylize_fast.bench import train

    case = Case("train", (1, 3, 32, 32), "float32", "contiguous", "forward+backward",
                (("arch", arch),))
    provs = {p.name: p for p in train.providers(case, "cpu")}
    ours, base = provs["sf fused"].build(), provs["examples"].build()
    seen = {}

    def spy(name):
        def hook(module, args):
            seen[name] = args[0].is_contiguous(memory_format=torch.channels_last)
        return hook

    handles = [ours.module.register_forward_pre_hook(spy("ours")),
               base.module.register_forward_pre_hook(spy("base"))]
    ours.step()
    base.step()
    for h in handles:
        h.remove()
    assert seen == {"ours": True, "base": False}
    assert train._loss(32, "cpu", False).vgg.kernels == "package"
    assert train._loss(32, "cpu", True).vgg.kernels == "eager"
    split = ours.split()
    assert set(split) == set(train.SPLIT_CATEGORIES)
    assert all(v >= 0 for v in split.values())
    assert split["loss network"] > 0 and split["generator conv"] > 0 and split["optimizer"] > 0
    result = bench.run_bench([case], None, repeats=2, warmup=0, isolate=False,
                             pin_allocator=False, log=lambda s: None)
    cats = {(r["provider"], r["category"]) for r in result.profile_rows}
    assert cats == {(p, c) for p in provs for c in train.SPLIT_CATEGORIES}
