#!/usr/bin/env python3
"""Does the test suite catch wrong kernels? Perturb each op's output and each gradient by a
small relative amount (1% float32, 5% bfloat16 by default) for one backend and dtype at a time,
run the tests that exercise it, and report whether the suite failed: a markdown table of
op x backend x dtype x target -> caught / survived. Exit status 1 if any perturbation survived.

The reference backend is the ground truth and is never perturbed. Mechanism: a pytest plugin
(scripts/teeth_plugin.py) wraps each test in a TorchDispatchMode that scales one output of the
chosen custom op (stylize_fast::<op>_fwd / _bwd for cpu, ..._triton for triton) when its input
has the chosen dtype. A first "survey" run with nothing perturbed records which tests exercise
which combination (and that they pass with the plugin in place); each combination then runs
only those tests, with -x.

    python scripts/check_test_teeth.py                      # everything runnable here
    python scripts/check_test_teeth.py --ops instance_norm --backends cpu --dtypes float32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = ("instance_norm", "padded_conv2d")
DTYPES = ("float32", "bfloat16")
TARGETS = ("output", "grad_input", "grad_weight", "grad_bias")
# The tests of each op, per backend (-x stops at the first failure, so order costs little).
FILES = {
    "instance_norm": {
        "common": ["test_instance_norm.py", "test_autograd_cpp.py",
                   "test_fused_instance_norm_layer.py", "test_fuse.py"],
        "cpu": ["test_instance_norm_cpu.py"],
        "triton": ["test_instance_norm_triton.py"],
    },
    "padded_conv2d": {
        "common": ["test_padded_conv.py", "test_padded_conv_activation.py", "test_autograd_cpp.py",
                   "test_fuse.py"],
        "cpu": ["test_padded_conv_cpu_direct.py", "test_padded_conv_cpu_library.py",
                "test_padded_conv_cpu_wgrad.py", "test_padded_conv_cpu_winograd.py"],
        "triton": ["test_padded_conv_triton.py"],
    },
}


def test_files(ops, backends, files=None) -> list[str]:
    if files:
        return list(files)
    names: list[str] = []
    for op in ops:
        for group in ("common", *backends):
            names += [n for n in FILES[op].get(group, []) if n not in names]
    return [os.path.join("tests", n) for n in names]


def run_pytest(files, env_extra: dict, extra_args=()) -> dict:
    """One pytest run with the plugin; returns what the plugin recorded."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "teeth.json")
        env = dict(os.environ, TEETH_OUT=out, **env_extra)
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.join(ROOT, "scripts"), ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        cmd = [sys.executable, "-m", "pytest", "-p", "teeth_plugin", "-q", "-p",
               "no:cacheprovider", "-W", "ignore::pytest.PytestWarning", *extra_args, *files]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if not os.path.exists(out):
            raise RuntimeError(f"pytest did not run the plugin (exit {proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        with open(out) as f:
            result = json.load(f)
        result["returncode"] = proc.returncode
        return result


def classify(result: dict) -> tuple[str, str]:
    """(verdict, detail) of one perturbed run."""
    failure = result["first_failure"]
    if result["perturbed_calls"] == 0:
        return "survived", "no test exercised it"
    if failure is None:
        return "survived", f"{result['perturbed_calls']} calls perturbed, all tests passed"
    where = f"{failure['test'].removeprefix('tests/')} ({failure['exception']})"
    if failure["plugin_crash"] or not failure["check"]:
        return "error", where + ": " + failure["message"]
    return "caught", where


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    p.add_argument("--backends", nargs="+", choices=("cpu", "triton"), default=None,
                   help="default: those available here (triton under TRITON_INTERPRET=1)")
    p.add_argument("--dtypes", nargs="+", choices=(*DTYPES, "float64", "float16"),
                   default=list(DTYPES), help="float64 is perturbed by --rel-float32, float16 "
                   "by --rel-bfloat16")
    p.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    p.add_argument("--rel-float32", type=float, default=0.01, help="relative perturbation")
    p.add_argument("--rel-bfloat16", type=float, default=0.05, help="relative perturbation")
    p.add_argument("--files", nargs="+", default=None, help="test files (default: per op)")
    p.add_argument("--output", default=None, help="also write the table to this file")
    p.add_argument("--jobs", type=int, default=2, help="pytest processes at a time")
    p.add_argument("--survey", default=None, metavar="JSON",
                   help="reuse this survey (which tests exercise what) if it exists, else write "
                        "it there: the survey runs every test once and is the slow part")
    args = p.parse_args(argv)

    os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton on CPU tensors, as tests/conftest.py
    sys.path.insert(0, ROOT)
    import stylize_fast as sf

    available = sf.backends.available()
    backends = args.backends or [b for b in ("cpu", "triton") if available[b]]
    for b in backends:
        if not available[b]:
            p.error(f"backend {b} is not available: {sf.backends.unavailable_reason(b)}")

    files = test_files(args.ops, backends, args.files)
    print(f"survey: {' '.join(files)}", file=sys.stderr, flush=True)
    if args.survey and os.path.exists(args.survey):
        with open(args.survey) as f:
            survey = json.load(f)
    else:
        with ThreadPoolExecutor(args.jobs) as pool:  # one pytest per file
            parts = list(pool.map(lambda f: run_pytest([f], {"TEETH_MODE": "survey"}), files))
        survey = {"tests": {t: r for part in parts for t, r in part["tests"].items()}}
        if args.survey:
            with open(args.survey, "w") as f:
                json.dump(survey, f)
    broken = sorted(t for t, r in survey["tests"].items() if not r["passed"])
    for t in broken:
        print(f"survey: {t} fails with nothing perturbed; left out", file=sys.stderr)

    combos = [(op, backend, dtype, target) for op in args.ops for backend in backends
              for dtype in args.dtypes for target in args.targets]

    def check(combo) -> tuple:
        op, backend, dtype, target = combo
        tests = [t for t, r in survey["tests"].items() if r["passed"] and list(combo) in r["seen"]]
        if not tests:
            return (*combo, 0, "survived", "no test exercised it")
        rel = args.rel_float32 if dtype in ("float32", "float64") else args.rel_bfloat16
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("\n".join(tests))
        try:
            result = run_pytest(
                sorted({t.split("::")[0] for t in tests},
                       key=lambda name: files.index(name) if name in files else 0),
                {"TEETH_MODE": "perturb", "TEETH_OP": op, "TEETH_BACKEND": backend,
                 "TEETH_DTYPE": dtype, "TEETH_TARGET": target, "TEETH_FACTOR": str(1 + rel),
                 "TEETH_SELECT": f.name}, ["-x"])
        finally:
            os.unlink(f.name)
        verdict, detail = classify(result)
        print(f"{' '.join(combo)}: {verdict} ({detail})", file=sys.stderr, flush=True)
        return (*combo, len(tests), verdict, detail)

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(check, combos))

    lines = [f"Perturbation: x{1 + args.rel_float32:g} (float32), x{1 + args.rel_bfloat16:g} "
             f"(bfloat16). Tests: {', '.join(files)}.", ""]
    if broken:
        lines += [f"Left out (fail with nothing perturbed): {', '.join(broken)}", ""]
    lines += ["| op | backend | dtype | target | tests exercising it | result | first failure |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {op} | {b} | {d} | {t} | {n} | {v} | {detail} |"
              for op, b, d, t, n, v, detail in rows]
    survived = [r for r in rows if r[5] != "caught"]
    lines += ["", f"{len(rows) - len(survived)} of {len(rows)} perturbations caught."]
    table = "\n".join(lines)
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            f.write(table + "\n")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
