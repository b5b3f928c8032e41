"""pytest-benchmark suite: the cases of ``stylize-fast bench`` at small sizes, one benchmark per
(case, provider), grouped by case so providers sit side by side.

    python -m pytest benchmarks/ --benchmark-only
    python -m pytest benchmarks/ --benchmark-only --benchmark-json=out.json

As the regression gate: save a run on a quiet machine (``--benchmark-autosave``), then
``--benchmark-compare --benchmark-compare-fail=median:10%`` fails a later run that got slower.

Kept out of the normal test run (pyproject: testpaths = ["tests"]). The providers are those of
stylize_fast.bench; a provider that cannot run here is skipped with its reason.
"""

from __future__ import annotations

import pytest
import torch

from stylize_fast.bench import allocator, machine
from stylize_fast.bench.runner import OP_MODULES
from stylize_fast.bench.suite import Case, Skip

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def pytest_configure(config):
    # The same allocator setting as `stylize-fast bench`: freed blocks stay in the process.
    allocator.pin()


def case_params(cases: list[Case]) -> list:
    """pytest params (case, provider name) with readable ids."""
    params = []
    for case in cases:
        for prov in OP_MODULES[case.op].providers(case, DEVICE, compile=True):
            cid = f"{case.shape_str}-{case.dtype}-{case.layout}-{case.mode}"
            if case.params:
                cid += "-" + "-".join(str(v) for _, v in case.params)
            params.append(pytest.param(case, prov.name, id=f"{cid}-{prov.name}"))
    return params


def run_benchmark(benchmark, case: Case, provider: str) -> None:
    prov = next(p for p in OP_MODULES[case.op].providers(case, DEVICE, compile=True)
                if p.name == provider)
    try:
        prepared = prov.build()
    except Skip as exc:
        pytest.skip(str(exc))
    benchmark.group = f"{case.op} {case.shape_str} {case.params_str} {case.dtype} " \
                      f"{case.layout} {case.mode}"
    benchmark.extra_info.update(machine.collect(DEVICE))
    benchmark.extra_info.update(provider=provider, backend=prov.backend)
    if prov.compiled:
        prepared.step()  # compile outside the measurement
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)

    def call():
        prepared.step()
        sync()

    benchmark.pedantic(call, rounds=10, iterations=1, warmup_rounds=2)
