"""Benchmarks of the fused ops and generators against PyTorch's own: ``stylize-fast bench``.

Typical use::

    from stylize_fast import bench
    result = bench.run_bench(bench.suite.quick(), output="bench_results")

Modules: ``timing`` (measurement core), ``machine`` (what it ran on), ``allocator`` (glibc's
page-fault tax), ``suite`` (cases, providers, case lists), ``instance_norm`` / ``padded_conv`` /
``generators`` (providers), ``runner`` (running cases), ``report`` (table, CSV, PNG).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import suite
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
    generator_allocators: tuple[str, ...] = ("pinned", "default"),
    isolate_generators: bool = True,
    pin_allocator: bool = True,
    time_limit_s: float | None = None,
    log: Callable[[str], None] = print,
) -> BenchResult:
    """Run ``cases`` and write ``results.csv``, ``profile.csv`` (generators) and one
    ``<op>.png`` per op into ``output`` (None: write nothing).

    Op cases run in this process with the allocator pinned (``pin_allocator``). Generator
    cases run once per setting in ``generator_allocators``, each in a fresh subprocess when
    ``isolate_generators`` (else once, here). ``budget_s`` caps the sampling time of one case
    (fewer repeats, at least 3). ``compile`` adds the torch.compile providers (True: for
    every op; a list: for those ops).
    ``time_limit_s`` stops starting new cases after that long (the generators, which run
    first, get at most half of it); what did not run is logged and the rest is still written.
    """
    from . import allocator, machine, report, runner

    t0 = time.perf_counter()
    cases = list(cases)
    if pin_allocator:
        allocator.pin()
    log(f"machine: {machine.describe(machine.collect(device))}")
    ops_cases = [c for c in cases if c.op != "generator"]
    gen_cases = [c for c in cases if c.op == "generator"]
    if not isinstance(compile, bool):
        compile = list(compile)
    kw = dict(device=device, compile=compile, warmup=warmup, repeats=repeats, budget_s=budget_s)
    start = time.time()
    end = None if time_limit_s is None else start + time_limit_s
    rows: list[dict] = []
    profile_rows: list[dict] = []
    if gen_cases:
        settings = generator_allocators if isolate_generators else (None,)
        for k, setting in enumerate(settings):
            # Each setting gets an equal slice of half the time limit.
            gen_end = None if end is None else start + time_limit_s / 2 * (k + 1) / len(settings)
            try:
                if setting is None:
                    r, p = runner.run_cases(gen_cases, log=log, deadline=gen_end, **kw)
                else:
                    log(f"generators with the allocator {setting} (subprocess)")
                    r, p = runner.run_in_subprocess(gen_cases, setting, log=log,
                                                    deadline=gen_end, **kw)
            except (RuntimeError, OSError) as exc:
                log(f"  failed: {exc}")
                continue
            rows += r
            profile_rows += p
    r, p = runner.run_cases(ops_cases, log=log, deadline=end, **kw)
    rows = r + rows
    profile_rows += p
    rows = runner.finish_rows(rows, machine.collect(device))
    result = BenchResult(rows, profile_rows)
    log("")
    log(report.format_table(rows))
    if profile_rows:
        log("\nprofile split (self time per category):")
        log(report.format_profile(profile_rows))
    if output is not None:
        os.makedirs(output, exist_ok=True)
        result.files["csv"] = report.write_csv(os.path.join(output, "results.csv"), rows)
        if profile_rows:
            result.files["profile_csv"] = report.write_csv(
                os.path.join(output, "profile.csv"), profile_rows, report.PROFILE_COLUMNS)
        if plot:
            for op in suite.OPS:
                path = report.plot(rows, op, os.path.join(output, f"{op}.png"))
                if path:
                    result.files[f"plot_{op}"] = path
    result.seconds = time.perf_counter() - t0
    if result.files:
        log("\nwrote:")
        for path in result.files.values():
            log(f"  {path}")
    log(f"done in {result.seconds:.0f} s")
    return result
