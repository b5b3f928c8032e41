"""Subprocess entry point: ``python -m stylize_fast.bench.worker SPEC.json OUT.json``.

Runs the cases in SPEC under the allocator setting it names (set before any large allocation)
and writes the rows as JSON. Used to measure the generator under both allocator settings."""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    from . import allocator

    allocator.apply(spec["setting"])
    import torch

    from .machine import threads_from_env

    threads = threads_from_env()
    if threads:
        torch.set_num_threads(threads)
    from .runner import run_cases
    from .suite import Case

    rows, profile_rows = run_cases(
        [Case.from_json(c) for c in spec["cases"]], device=spec["device"],
        compile=spec["compile"], warmup=spec["warmup"], repeats=spec["repeats"],
        budget_s=spec["budget_s"], memory=spec.get("memory", False),
        profile_generators=spec.get("profile_generators", True), deadline=spec.get("deadline"),
        log=lambda s: print(s, flush=True))
    with open(out_path, "w") as f:
        json.dump({"rows": rows, "profile_rows": profile_rows}, f, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
