"""Run the CUDA device code on the CPU under the host emulation, against the float64 reference.

    python -m tests.cuda_emulation [--ops instance_norm,padded_conv,norm_conv] [WORK_DIR]

Catches indexing, reduction and synchronisation-order bugs; not timing, not the hardware's
rounding of fast-math intrinsics, not out-of-bounds reads (compute-sanitizer on a GPU does).
Exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from . import build, run_instance_norm, run_norm_conv, run_padded_conv

RUNNERS = {"instance_norm": run_instance_norm.run, "padded_conv": run_padded_conv.run,
           "norm_conv": run_norm_conv.run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cuda_emulation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work_dir", nargs="?", help="build directory (default: a temp dir)")
    parser.add_argument("--ops", default=",".join(RUNNERS),
                        help="comma-separated ops to run (default: %(default)s)")
    args = parser.parse_args(argv)
    ops = [op for op in args.ops.split(",") if op]
    unknown = [op for op in ops if op not in RUNNERS]
    if unknown:
        parser.error(f"--ops: unknown {unknown}; choose from {list(RUNNERS)}")
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="sf-cuda-emu.")
    failed = False
    for op in ops:
        start = time.monotonic()
        emu = build.load(op, work_dir)
        built = time.monotonic()
        cases, failures = RUNNERS[op](emu)
        print(f"cuda emulation, {op}: {cases} cases, {failures} failed; build {built - start:.0f} s, "
              f"run {time.monotonic() - built:.0f} s (work dir {work_dir})", flush=True)
        failed |= failures > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
