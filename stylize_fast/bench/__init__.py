"""Benchmarks of the fused ops and generators against PyTorch's own: ``stylize-fast bench``.

Typical use::

    from stylize_fast import bench
    result = bench.run_bench(bench.suite.quick(), output="bench_results")

Modules: ``timing`` (measurement core), ``machine`` (what it ran on), ``allocator`` (glibc's
page-fault tax), ``suite`` (cases, providers, case lists), ``instance_norm`` / ``padded_conv`` /
``generators`` (providers), ``runner`` (running cases), ``report`` (table, CSV, PNG),
``tables`` (README tables from committed CSVs), ``memory`` (peak memory of a call).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import report, suite
from .suite import Case

__all__ = ["BenchResult", "Case", "run_bench", "suite"]


@dataclass
class BenchResult:
    rows: list[dict]
    profile_rows: list[dict]
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def run_bench(
    cases: Iterable[Case],
    output: str | None = "bench_results",
    *,
    device: str = "cpu",
    compile: bool | list[str] = False,
    warmup: int = 2,
    repeats: int = 15,
    budget_s: float | None = None,
    plot: bool = True,
    allocators: tuple[str, ...] = ("pinned", "default"),
    isolate: bool = True,
    pin_allocator: bool = True,
    memory: bool = False,
    profile_generators: bool = True,
    time_limit_s: float | None = None,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> BenchResult:
    """Run ``cases`` and write ``results.csv``, ``profile.csv`` (generators) and one
    ``<op>.png`` per op (``<op>_sweep.png`` where sizes sweep) into ``output`` (None: write
    nothing).

    With ``isolate`` the whole case list runs once per setting in ``allocators`` ("pinned":
    glibc keeps freed memory; "default": glibc's own behaviour, which page-faults big blocks back
    in as a user's script does), each in a fresh subprocess, since mallopt cannot be undone; the
    rows say which in their ``allocator`` column. Without it, the cases run here once, with the
    allocator pinned first if ``pin_allocator``. ``budget_s`` caps the sampling time of one
    case (fewer rounds, at least 3). ``compile`` adds the torch.compile providers (True: for
    every op; a list: for those ops). ``memory`` adds each call's peak memory (CPU).
    ``time_limit_s`` stops starting new cases after that long (split evenly between the
    allocator settings); what did not run is logged and the rest is still written.
    ``command`` is recorded in every row (default: this process's command line).
    """
    from . import allocator, machine, runner

    t0 = time.perf_counter()
    cases = list(cases)
    if command is None:
        program = os.path.basename(sys.argv[0]) or "python"
        if program == "__main__.py":  # python -m stylize_fast: the same as the console script
            program = "stylize-fast"
        command = " ".join([program, *sys.argv[1:]])
    if not isolate and pin_allocator:
        allocator.pin()
    log(f"machine: {machine.describe(machine.collect(device))}")
    if not isinstance(compile, bool):
        compile = list(compile)
    kw = dict(device=device, compile=compile, warmup=warmup, repeats=repeats, budget_s=budget_s,
              memory=memory, profile_generators=profile_generators)
    start = time.time()
    rows: list[dict] = []
    profile_rows: list[dict] = []
    settings = tuple(allocators) if isolate else (None,)
    for k, setting in enumerate(settings):
        # Each setting gets an equal slice of the time limit (what one leaves, the next gets).
        end = None if time_limit_s is None else start + time_limit_s * (k + 1) / len(settings)
        try:
            if setting is None:
                r, p = runner.run_cases(cases, log=log, deadline=end, **kw)
            else:
                log(f"allocator {setting}: {len(cases)} cases in a subprocess")
                r, p = runner.run_in_subprocess(cases, setting, log=log, deadline=end, **kw)
        except (RuntimeError, OSError) as exc:
            log(f"  failed: {exc}")
            continue
        rows += r
        profile_rows += p
    info = {**machine.collect(device), "command": command}
    rows = runner.finish_rows(rows, info)
    profile_rows = runner.finish_rows(profile_rows, info, ratios=False)
    result = BenchResult(rows, profile_rows)
    log("")
    log(report.format_table(rows))
    if profile_rows:
        log("\nprofile split (self time per category):")
        log(report.format_profile(profile_rows))
    if output is not None:
        result.files = write_outputs(rows, profile_rows, output, plot=plot, log=log)
    result.seconds = time.perf_counter() - t0
    if result.files:
        log("\nwrote:")
        for path in result.files.values():
            log(f"  {path}")
    log(f"done in {result.seconds:.0f} s")
    return result


def write_outputs(rows: list[dict], profile_rows: list[dict], output: str, *,
                  name: str = "results", plot: bool = True,
                  log: Callable[[str], None] = print) -> dict[str, str]:
    """Write ``<name>.csv`` first (a missing plotting package never costs the numbers), the
    profile split when there is one, then the pictures: ``<op>.png`` bar charts and
    ``<op>_sweep.png`` where sizes sweep. Another ``name`` prefixes every file with it
    (``<name>.png`` when the rows hold one op). Returns kind -> path."""
    os.makedirs(output, exist_ok=True)
    path = lambda stem: os.path.join(output, stem)
    files = {"csv": report.write_csv(path(f"{name}.csv"), rows)}
    if profile_rows:
        stem = "profile.csv" if name == "results" else f"{name}_profile.csv"
        files["profile_csv"] = report.write_csv(path(stem), profile_rows, report.PROFILE_COLUMNS)
    if not plot:
        return files
    if report._pyplot() is None:
        log(report.PLOT_HINT)
        return files
    ops = [op for op in suite.OPS if any(r["op"] == op for r in rows)]
    for op in ops:
        stem = op if name == "results" else name if len(ops) == 1 else f"{name}_{op}"
        made = report.plot(rows, op, path(f"{stem}.png"))
        if made:
            files[f"plot_{op}"] = made
        made = report.plot_sweeps(rows, op, path(f"{stem}_sweep.png"))
        if made:
            files[f"sweep_{op}"] = made
    return files
