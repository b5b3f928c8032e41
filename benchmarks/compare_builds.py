"""Speed of two builds of the package side by side: did a change alter the kernels' speed?

    python benchmarks/compare_builds.py BASELINE_TREE [CANDIDATE_TREE] [--processes 3]
                                        [--repeats 11] [--csv FILE] [--smoke]

Each tree is a checkout with its extension built in place (``python setup.py build_ext
--inplace``); CANDIDATE_TREE defaults to this checkout. Both builds register the same op names,
so they cannot share a process: each measurement runs in a worker process that imports one
tree's ``stylize_fast``, and the workers alternate between the trees (baseline, candidate,
baseline, ...) so that a change in the machine's load hits both. Within a worker every case
times our provider and its PyTorch yardstick interleaved (``stylize_fast.bench.timing`` of this
checkout, loaded by path, so both trees are timed by the same code) and reports their ratio;
the table gives, per tree, the median of that ratio over the processes. Only the public API
(``stylize_fast.functional``, ``stylize_fast.models``, ``stylize_fast.backends``) is used, so
older trees can be compared too. Workers run with glibc's allocator pinned
(``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1``) and 2 threads.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TIMING_PY = os.path.join(HERE, "..", "stylize_fast", "bench", "timing.py")


def _cases(smoke: bool):
    """name -> (ours, yardstick), each a zero-argument callable; built in the worker."""
    import torch
    import torch.nn.functional as F

    import stylize_fast as sf

    torch.manual_seed(0)
    s = 8 if smoke else 1
    cases = {}

    def norm_case(shape, dtype, backward):
        x = torch.randn(shape).to(dtype).requires_grad_(backward)
        c = shape[1]
        w, b = torch.rand(c) + 0.5, torch.randn(c)
        g = torch.randn(shape).to(dtype)

        def ours():
            y = sf.functional.instance_norm(x, w, b, activation="relu")
            if backward:
                y.backward(g)

        def copy():
            y = x.detach().clone()
            if backward:  # the backward reads two tensors and writes one: a second copy
                g.clone()
            return y

        return ours, copy

    def conv_case(shape, out, k, dtype, layout, backward):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        x = torch.randn(shape).to(dtype).contiguous(memory_format=fmt).requires_grad_(backward)
        w = (torch.randn(out, shape[1], k, k) / (shape[1] * k * k) ** 0.5).to(dtype)
        w.requires_grad_(backward)
        b = torch.randn(out).to(dtype).requires_grad_(backward)
        p = k // 2
        g = None

        def run(fn):
            nonlocal g
            y = fn()
            if backward:
                if g is None:
                    g = torch.randn_like(y)
                y.backward(g)

        def ours():
            with sf.backends.use("cpu"):
                run(lambda: sf.functional.padded_conv2d(x, w, b, padding=p, padding_mode="reflect"))

        def eager():
            run(lambda: F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), w, b))

        return ours, eager

    def generator_case(size, dtype):
        x = torch.rand(1, 3, size, size) * 255
        fused = sf.models.JohnsonNet(norm="fused").eval()
        plain = sf.models.JohnsonNet(norm="instance").eval()
        plain.load_state_dict(fused.state_dict())
        fused, plain = fused.to(dtype), plain.to(dtype)
        xd = x.to(dtype)

        def ours():
            with torch.no_grad():
                fused(xd)

        def eager():
            with torch.no_grad():
                plain(xd)

        return ours, eager

    cases["instance_norm fwd 4x64x128x128 float32 / clone"] = norm_case(
        (4, 64, 128 // s, 128 // s), torch.float32, False)
    cases["instance_norm fwd+bwd 4x64x128x128 float32 / clone"] = norm_case(
        (4, 64, 128 // s, 128 // s), torch.float32, True)
    cases["instance_norm fwd 4x64x128x128 bfloat16 / clone"] = norm_case(
        (4, 64, 128 // s, 128 // s), torch.bfloat16, False)
    cases["padded_conv fwd+bwd 1x64x128x128 3x3->64 float32 channels_last / F.pad+conv2d"] = \
        conv_case((1, 64, 128 // s, 128 // s), 64, 3, torch.float32, "channels_last", True)
    cases["padded_conv fwd+bwd 1x32x256x256 9x9->3 bfloat16 nchw / F.pad+conv2d"] = \
        conv_case((1, 32, 256 // s, 256 // s), 3, 9, torch.bfloat16, "nchw", True)
    cases["JohnsonNet 512x512 float32 fused / instance"] = generator_case(
        512 // s, torch.float32)
    cases["JohnsonNet 512x512 bfloat16 fused / instance"] = generator_case(
        512 // s, torch.bfloat16)
    return cases


def worker(repeats: int, smoke: bool) -> None:
    """Runs in one tree's process: prints {case: ratio} as JSON on its last line."""
    import torch

    torch.set_num_threads(2)
    spec = importlib.util.spec_from_file_location("sf_compare_timing", os.environ["SF_TIMING_PY"])
    timing = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = timing  # dataclasses look the module up by name
    spec.loader.exec_module(timing)
    ratios = {}
    for name, (ours, yardstick) in _cases(smoke).items():
        res = timing.measure({"ours": ours, "yardstick": yardstick}, repeats=repeats)
        if all(isinstance(r, timing.Timing) for r in res.values()):
            ratios[name] = res["ours"].median / res["yardstick"].median
    print(json.dumps(ratios))


def run_worker(tree: str, repeats: int, smoke: bool) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=tree, SF_TIMING_PY=os.path.abspath(TIMING_PY),
               MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_="-1", OMP_NUM_THREADS="2")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--repeats", str(repeats)]
    if smoke:
        cmd.append("--smoke")
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"compare_builds: the worker for {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", nargs="?", help="checkout with the baseline build")
    parser.add_argument("candidate", nargs="?", default=os.path.join(HERE, ".."),
                        help="checkout with the candidate build (default: this one)")
    parser.add_argument("--processes", type=int, default=3,
                        help="worker processes per tree, alternating (default 3)")
    parser.add_argument("--repeats", type=int, default=11, help="interleaved rounds (default 11)")
    parser.add_argument("--csv", metavar="FILE", help="write one row per case and tree")
    parser.add_argument("--smoke", action="store_true", help="small shapes: checks the machinery")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.repeats, args.smoke)
        return 0
    if args.baseline is None:
        parser.error("the baseline tree is required")
    if args.processes < 1 or args.repeats < 1:
        parser.error("--processes and --repeats must be positive")
    trees = {"baseline": os.path.abspath(args.baseline), "candidate": os.path.abspath(args.candidate)}
    for label, tree in trees.items():
        if not os.path.isdir(os.path.join(tree, "stylize_fast")):
            parser.error(f"{label} tree {tree!r} holds no stylize_fast package")
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    for k in range(args.processes):
        for label, tree in trees.items():
            print(f"process {k + 1}/{args.processes}: {label} ({tree})", flush=True)
            runs[label].append(run_worker(tree, args.repeats, args.smoke))
    names = list(runs["candidate"][0])
    rows = []
    print(f"\n{'case (ours / yardstick)':<75} {'baseline':>9} {'candidate':>9} {'change':>7}")
    for name in names:
        med = {label: statistics.median(r[name] for r in runs[label] if name in r)
               for label in trees if all(name in r for r in runs[label])}
        if len(med) < 2:
            continue
        change = med["candidate"] / med["baseline"]
        print(f"{name:<75} {med['baseline']:9.3f} {med['candidate']:9.3f} {change:7.2f}")
        rows.append({"case": name, "baseline_ratio": f"{med['baseline']:.4f}",
                     "candidate_ratio": f"{med['candidate']:.4f}", "change": f"{change:.3f}",
                     "processes": args.processes, "repeats": args.repeats})
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["case"])
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
