"""Runs case lists: builds providers, times them interleaved, turns timings into CSV rows.

A case list runs once per allocator setting, each in its own subprocess
(``python -m stylize_fast.bench.worker``), because ``mallopt`` cannot be undone in a process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable

import torch

from . import allocator, generators, instance_norm, machine, padded_conv, train
from .suite import Case, Prepared, Provider, Skip
from .timing import Timing, measure

OP_MODULES = {"instance_norm": instance_norm, "padded_conv2d": padded_conv,
              "generator": generators, "train": train}

Log = Callable[[str], None]


def _silent(_: str) -> None:
    pass


def _fmt_exc(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200]


def run_case(case: Case, *, device: str = "cpu", compile: bool = False, warmup: int = 2,
             repeats: int = 15, budget_s: float | None = None, profile: bool = False,
             memory: bool = False, log: Log = _silent) -> tuple[list[dict], list[dict]]:
    """Measure every provider of ``case``; returns (rows, profile_rows) without machine columns
    and ratios (added by :func:`finish_rows`). ``memory``: also the peak bytes of one call
    (CPU, after the timing; see :mod:`.memory`)."""
    module = OP_MODULES[case.op]
    rows: list[dict] = []
    prepared: dict[str, Prepared] = {}
    provs: dict[str, Provider] = {}
    base = {"op": case.op, "shape": case.shape_str, "params": case.params_str,
            "dtype": case.dtype, "layout": case.layout, "mode": case.mode}
    note = getattr(module, "note", None)
    if note is not None:
        try:
            base["note"] = note(case, device)
        except Exception as exc:
            base["note"] = f"note failed: {_fmt_exc(exc)}"
    for prov in module.providers(case, device, compile=compile):
        try:
            prepared[prov.name] = prov.build()
            provs[prov.name] = prov
        except Skip as exc:
            rows.append({**base, "provider": prov.name, "backend": prov.backend,
                         "status": f"skipped: {exc}"})
        except Exception as exc:
            rows.append({**base, "provider": prov.name, "backend": prov.backend,
                         "status": f"error: {_fmt_exc(exc)}"})
    timings = measure({n: p.step for n, p in prepared.items()}, device=device, warmup=warmup,
                      repeats=repeats, budget_s=budget_s)
    traffic = module.traffic_bytes(case)
    flops = module.flop_count(case)
    quality = _quality(case, prepared, provs) if case.op == "generator" else {}
    for name, t in timings.items():
        prov = provs[name]
        row = {**base, "provider": name, "backend": prov.backend,
               "baseline": int(prov.baseline), "is_copy": int(prov.is_copy)}
        if isinstance(t, Timing):
            row.update(status="ok", median_ms=t.median * 1e3, p20_ms=t.p20 * 1e3,
                       p80_ms=t.p80 * 1e3, repeats=t.repeats, first_call_s=t.first_call_s,
                       compile_s=t.setup_s if prov.compiled else "")
            if traffic and not prov.is_copy:
                row["gbps"] = traffic / t.median / 1e9
            elif prov.is_copy:
                row["gbps"] = 2 * case.numel * case.torch_dtype.itemsize / t.median / 1e9
            if flops and not prov.is_copy:
                row["gflops"] = flops / t.median / 1e9
            if name in quality:
                row["psnr_db"] = quality[name]
            if memory and not device.startswith("cuda"):
                from .memory import peak_bytes

                try:
                    row["peak_mb"] = peak_bytes(prepared[name].step) / 2**20
                except Exception as exc:
                    log(f"  peak memory of {name} failed: {_fmt_exc(exc)}")
        else:
            row["status"] = f"error: {_fmt_exc(t)}"
        rows.append(row)
    profile_rows: list[dict] = []
    if profile:
        for name, prep in prepared.items():
            if provs[name].backend in ("onnxruntime", "openvino"):
                continue
            if not isinstance(timings.get(name), Timing):
                continue
            try:
                split = (prep.split() if prep.split is not None else
                         generators.profile_split(prep.step, device, module=prep.module))
            except Exception as exc:
                log(f"  profile of {name} failed: {_fmt_exc(exc)}")
                continue
            total = sum(split.values()) or float("nan")
            for cat, sec in split.items():
                profile_rows.append({**base, "provider": name, "backend": provs[name].backend,
                                     "category": cat, "self_ms": sec * 1e3,
                                     "fraction": sec / total})
    del prepared
    return rows, profile_rows


def _quality(case: Case, prepared: dict[str, Prepared], provs: dict[str, Provider]) -> dict:
    """PSNR (dB) of each provider's output against the plain float32 model's, same input."""
    ref_name = (generators.BASELINE if case.dtype == "float32" else generators.BASELINE_FP32)
    ref = prepared.get(ref_name)
    if ref is None or ref.forward is None:
        return {}
    try:
        expected = ref.forward(0)
    except Exception:
        return {}
    out = {}
    for name, prep in prepared.items():
        if prep.forward is None or provs[name].is_copy:
            continue
        try:
            out[name] = generators.psnr(prep.forward(0), expected)
        except Exception:
            out[name] = float("nan")
    return out


def finish_rows(rows: list[dict], info: dict[str, str], *, ratios: bool = True) -> list[dict]:
    """Add ratio_to_baseline / ratio_to_copy (within each case and allocator setting) and the
    machine columns (a row's own, from the process that measured it, win)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["op"], row["shape"], row.get("params", ""), row["dtype"], row["layout"],
               row["mode"], row.get("allocator", info.get("allocator")))
        groups.setdefault(key, []).append(row)
    for group in groups.values() if ratios else ():
        ok = [r for r in group if r.get("status") == "ok"]
        base = next((r["median_ms"] for r in ok if r.get("baseline")), None)
        copy = next((r["median_ms"] for r in ok if r.get("is_copy")), None)
        for r in ok:
            if base:
                r["ratio_to_baseline"] = r["median_ms"] / base
            if copy and not r.get("is_copy"):
                r["ratio_to_copy"] = r["median_ms"] / copy
    out = []
    for row in rows:
        merged = dict(info)
        merged.update(row)  # a worker's own machine columns (allocator) win
        out.append(merged)
    return out


def run_cases(cases: Iterable[Case], *, device: str = "cpu", compile: bool | list = False,
              warmup: int = 2, repeats: int = 15, budget_s: float | None = None,
              profile_generators: bool = True, memory: bool = False,
              deadline: float | None = None, log: Log = _silent) -> tuple[list, list]:
    """Run ``cases`` in this process; rows carry this process's machine columns. No case is
    started after ``deadline`` (a ``time.time()`` value); those are logged as not run."""
    rows: list[dict] = []
    profile_rows: list[dict] = []
    info = machine.collect(device)
    cases = list(cases)
    for i, case in enumerate(cases, 1):
        if deadline is not None and time.time() > deadline:
            log(f"time limit reached: {len(cases) - i + 1} of {len(cases)} cases not run")
            break
        t0 = time.perf_counter()
        # compile: True/False for every case, or the ops that get torch.compile providers.
        on = compile if isinstance(compile, bool) else case.op in compile
        profile = profile_generators and case.op in ("generator", "train")
        r, p = run_case(case, device=device, compile=on, warmup=warmup, repeats=repeats,
                        budget_s=budget_s, profile=profile,
                        memory=memory, log=log)
        log(f"[{i}/{len(cases)}] {case.op} {case.shape_str} {case.params_str} {case.dtype} "
            f"{case.layout} {case.mode}: {time.perf_counter() - t0:.1f} s")
        rows += r
        profile_rows += p
    return ([{**info, **r} for r in rows], [{**info, **r} for r in profile_rows])


def run_in_subprocess(cases: list[Case], setting: str, *, device: str = "cpu",
                      compile: bool | list = False, warmup: int = 2, repeats: int = 15,
                      budget_s: float | None = None, memory: bool = False,
                      profile_generators: bool = True, deadline: float | None = None,
                      log: Log = _silent) -> tuple[list, list]:
    """Run ``cases`` in a fresh interpreter with allocator ``setting`` ("pinned"/"default")."""
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        spec = {"cases": [c.to_json() for c in cases], "setting": setting, "device": device,
                "compile": compile, "warmup": warmup, "repeats": repeats, "budget_s": budget_s,
                "memory": memory, "profile_generators": profile_generators,
                "deadline": deadline}
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        env = allocator.subprocess_env(setting)
        env["STYLIZE_FAST_BENCH_THREADS"] = str(torch.get_num_threads())
        # The child imports this copy of the package (a checkout run as a script, or installed).
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        # Stream the worker's progress lines as they come (a full run takes a while).
        proc = subprocess.Popen([sys.executable, "-m", "stylize_fast.bench.worker", spec_path,
                                 out_path], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        for line in proc.stdout:
            log(f"  ({setting} malloc) {line.rstrip()}")
        stderr = proc.stderr.read()
        proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark worker ({setting} allocator) failed with exit code "
                               f"{proc.returncode}: {stderr.strip()[-800:]}")
        with open(out_path) as f:
            result = json.load(f)
    return result["rows"], result["profile_rows"]


def nan_to_blank(rows: list[dict]) -> list[dict]:
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                r[k] = ""
    return rows
