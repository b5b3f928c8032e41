"""The video pipeline of ``stylize-fast stylize`` against the model alone: how close does the
overlapped decode -> stylise -> encode pipeline come to the model's own frame rate, and does its
memory stay flat on a longer video?

    python benchmarks/bench_video_pipeline.py [--size 512] [--frames 200] [--batch 4]
                                              [--repeats 3] [--threads 2]
                                              [--memory-frames 100,200]
                                              [--csv docs/results/video_pipeline.csv]

The input is a synthetic H.264 video (made here with PyAV): a camera panning over
``skimage.data.astronaut()`` (a procedural texture when scikit-image is missing), ``--size``
square, ``--frames`` long, 25 frame/s. The model is a fused ``JohnsonNet()`` (default width,
random weights), run by one :class:`~stylize_fast.inference.Stylizer` (float32, CPU,
``--batch`` frames per call, allocator tuned as the command does) shared by both providers:

* ``pipeline``: :func:`stylize_fast.inference.video.stylize_stream`, the code path of
  ``stylize-fast stylize --input in.mp4 --output out.mp4`` after argument parsing: decoding,
  stylising and encoding (H.264 CRF 18, preset veryfast, when PyAV has libx264) overlapped;
* ``model alone`` (the baseline): the same frames, decoded beforehand and held in memory as
  ``(B, 3, H, W)`` uint8 batches, through ``Stylizer.stylize_tensor`` and the same rounding to
  uint8 -- what the pipeline would do with free, instant decoding and encoding.

One round runs each provider once over the whole video; rounds alternate which goes first, and
the summary is the median over ``--repeats`` rounds (plus p20-p80). The goal is a pipeline frame
rate >= 0.85x the model's. Memory: a fresh subprocess per video length (``--memory-frames``)
builds the Stylizer, runs one warm-up batch, reads VmRSS, runs the pipeline and reads VmHWM:
the growth must not depend on the length. Rows go to ``--csv`` (the one CSV layout of
``stylize_fast.bench.report``; rewritten); ``median_ms`` is milliseconds per frame.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stylize_fast.commands.argtypes import positive_int  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CSV = os.path.join(ROOT, "docs", "results", "video_pipeline.csv")
GOAL = 0.85  # pipeline frame rate / model-alone frame rate
BASELINE = "model alone"
PIPELINE = "pipeline"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=positive_int, default=512,
                        help="frame side, a multiple of 4 (default 512)")
    parser.add_argument("--frames", type=positive_int, default=200,
                        help="frames of the timed video (default 200)")
    parser.add_argument("--batch", type=positive_int, default=4,
                        help="frames per model call (default 4, the command's default)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="rounds, one run of each provider per round (default 3)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    parser.add_argument("--memory-frames", default="100,200", metavar="N,M",
                        help="video lengths of the peak-RSS runs, one subprocess each "
                             "(default 100,200; empty: skip)")
    parser.add_argument("--csv", metavar="FILE", default=DEFAULT_CSV,
                        help="write the rows to FILE, rewritten (default "
                             "docs/results/video_pipeline.csv)")
    parser.add_argument("--memory-run", nargs=2, metavar=("VIDEO", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size % 4:
        parser.error(f"--size must be a multiple of 4 (JohnsonNet.multiple), got {args.size}")
    args.memory_frames = [positive_int(v) for v in args.memory_frames.split(",") if v.strip()]
    return args


# -- the input ----------------------------------------------------------------------------------


def source_photo(side: int):
    """A ``(side, side, 3)`` uint8 photo: skimage's astronaut (resized), else a texture."""
    import numpy as np
    from PIL import Image

    try:
        from skimage.data import astronaut

        image, what = astronaut(), "skimage.data.astronaut()"
    except ImportError:
        ys, xs = np.mgrid[0:512, 0:512] / 512.0
        rng = np.random.default_rng(0)
        image = np.stack([0.5 + 0.25 * np.sin(9 * xs + 3 * c) * np.cos(7 * ys - c)
                          for c in range(3)], -1) + 0.08 * rng.standard_normal((512, 512, 3))
        image, what = np.clip(image * 255, 0, 255).astype(np.uint8), "procedural texture"
    image = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.LANCZOS))
    return image, what


def make_video(path: str, size: int, frames: int, fps: int = 25) -> str:
    """A camera pan (1 pixel right, 1 down per frame, wrapping back) over the photo, scaled so
    the window never leaves it, encoded as H.264 (or MPEG-4 Part 2); returns what it shows."""
    import av

    travel = min(frames, 256)
    image, what = source_photo(size + travel)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"} if codec == "libx264" \
            else {"qscale": "2"}
        for k in range(frames):
            o = k % travel if (k // travel) % 2 == 0 else travel - 1 - k % travel
            window = image[o:o + size, o:o + size]
            for packet in stream.encode(av.VideoFrame.from_ndarray(window, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return f"{what}, {codec}"


def decode_batches(path: str, batch: int):
    """The video's frames as ``(B, 3, H, W)`` uint8 tensors (the last one may be short)."""
    import numpy as np
    import torch

    from stylize_fast.inference.video import VideoReader

    frames = list(VideoReader(path).frames())
    return [torch.from_numpy(np.stack(frames[i:i + batch])).permute(0, 3, 1, 2)
            for i in range(0, len(frames), batch)], len(frames)


def make_stylizer(batch: int):
    import torch

    from stylize_fast.inference import Stylizer
    from stylize_fast.models import JohnsonNet

    torch.manual_seed(0)
    return Stylizer(JohnsonNet(), batch_size=batch)


# -- memory (one subprocess per length) ----------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_run(args: argparse.Namespace) -> int:
    """In a fresh process: RSS before the pipeline, peak RSS after (MiB), printed as JSON."""
    import torch

    from stylize_fast.inference.video import stylize_stream

    torch.set_num_threads(args.threads)
    src, dst = args.memory_run
    stylizer = make_stylizer(args.batch)
    with torch.inference_mode():  # warm-up: the model's activations are not the pipeline's
        stylizer.stylize_tensor(torch.zeros(args.batch, 3, args.size, args.size))
    before = _status_kb("VmRSS")
    hwm_before = _status_kb("VmHWM")
    stats = stylize_stream(stylizer, src, dst)
    print(json.dumps({"frames": stats.frames, "rss_before_mb": before / 1024,
                      "hwm_before_mb": hwm_before / 1024, "hwm_after_mb": _status_kb("VmHWM") / 1024,
                      "queue_high_water": stats.queue_high_water, "buffers": stats.buffers}))
    return 0


def measure_memory(args: argparse.Namespace, workdir: str, command: str) -> list[dict]:
    rows = []
    for n in args.memory_frames:
        src = os.path.join(workdir, f"mem_{n}.mp4")
        make_video(src, args.size, n)
        cmd = [sys.executable, os.path.abspath(__file__), "--size", str(args.size), "--batch",
               str(args.batch), "--threads", str(args.threads), "--memory-run", src,
               os.path.join(workdir, f"mem_{n}_out.mp4")]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            rows.append({"provider": f"{PIPELINE} peak RSS growth, {n} frames",
                         "status": f"error: {proc.stderr.strip().splitlines()[-1][:160]}"})
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        growth = result["hwm_after_mb"] - max(result["rss_before_mb"], 0)
        print(f"{n:4d} frames: RSS before the pipeline {result['rss_before_mb']:.0f} MiB, peak "
              f"{result['hwm_after_mb']:.0f} MiB -> growth {growth:.1f} MiB "
              f"(queues {result['queue_high_water']}, buffers {result['buffers']})")
        rows.append({"provider": f"{PIPELINE} peak RSS growth, {n} frames", "status": "ok",
                     "peak_mb": growth, "shape": f"{n}x3x{args.size}x{args.size}",
                     "note": (f"VmHWM after - VmRSS before the pipeline, fresh process; "
                              f"peak {result['hwm_after_mb']:.0f} MiB; queues "
                              f"{result['queue_high_water']} of {args.batch}-frame batches"),
                     "command": command})
    return rows


# -- speed ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_run:
        return memory_run(args)
    from stylize_fast.bench import allocator

    allocator.apply("pinned")  # what Stylizer(tune_allocator=True) does; before big allocations
    import torch

    import stylize_fast as sf
    from stylize_fast.bench import machine
    from stylize_fast.bench.report import format_table, write_csv
    from stylize_fast.bench.runner import finish_rows
    from stylize_fast.bench.timing import quantile
    from stylize_fast.inference.video import stylize_stream

    torch.set_num_threads(args.threads)
    info = machine.collect("cpu")
    backend = "cpu" if sf.backends.available()["cpu"] else "reference"
    command = " ".join(shlex.quote(a) for a in ["benchmarks/bench_video_pipeline.py",
                                                *(sys.argv[1:] if argv is None else argv)])
    print(machine.describe(info))
    workdir = tempfile.mkdtemp(prefix="bench_video_")
    src, dst = os.path.join(workdir, "in.mp4"), os.path.join(workdir, "out.mp4")
    what = make_video(src, args.size, args.frames)
    stylizer = make_stylizer(args.batch)
    batches, frames = decode_batches(src, args.batch)
    print(f"{frames} frames {args.size}x{args.size} ({what}), batch {args.batch}, "
          f"{args.repeats} rounds ...", flush=True)

    def pipeline() -> tuple[float, float]:
        stats = stylize_stream(stylizer, src, dst)
        assert stats.frames == frames, (stats.frames, frames)
        return stats.seconds, stats.model_seconds

    def model_alone() -> tuple[float, float]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                stylizer.stylize_tensor(x).round_().to(torch.uint8).permute(0, 2, 3, 1)
        t = time.perf_counter() - t0
        return t, t

    with sf.backends.use(backend):
        with torch.inference_mode():  # warm-up, one batch
            stylizer.stylize_tensor(batches[0])
        samples: dict[str, list[float]] = {PIPELINE: [], BASELINE: []}
        inside: list[float] = []
        for r in range(args.repeats):
            order = [(PIPELINE, pipeline), (BASELINE, model_alone)]
            for name, fn in (order if r % 2 == 0 else order[::-1]):
                seconds, model_seconds = fn()
                samples[name].append(seconds)
                if name == PIPELINE:
                    inside.append(model_seconds)
                print(f"  round {r + 1} {name:11s} {seconds:7.2f} s  "
                      f"{frames / seconds:6.2f} frame/s"
                      + (f"  (model calls inside: {frames / model_seconds:.2f} frame/s)"
                         if name == PIPELINE else ""), flush=True)
    base = {"op": "video_pipeline", "backend": backend,
            "shape": f"{frames}x3x{args.size}x{args.size}",
            "params": f"arch=johnson batch={args.batch} threads={args.threads}",
            "dtype": "float32", "layout": "contiguous", "mode": "inference", "command": command}
    rows = []
    for name, values in samples.items():
        per_frame = [v / frames * 1e3 for v in values]
        fps = frames / quantile(values, 0.5)
        note = (f"ms per frame; {fps:.2f} frame/s over {frames} frames; {what}" if name == BASELINE
                else f"ms per frame; {fps:.2f} frame/s; model calls inside the pipeline "
                     f"{frames / quantile(inside, 0.5):.2f} frame/s; decode + encode "
                     f"overlapped; {what}")
        rows.append({**base, "provider": name, "status": "ok",
                     "median_ms": quantile(per_frame, 0.5), "p20_ms": quantile(per_frame, 0.2),
                     "p80_ms": quantile(per_frame, 0.8), "repeats": len(values),
                     "note": note, "baseline": int(name == BASELINE), "is_copy": 0})
    rows = finish_rows(rows, info)
    ratio = quantile(samples[BASELINE], 0.5) / quantile(samples[PIPELINE], 0.5)
    print(format_table(rows))
    print(f"pipeline / model-alone frame rate = {ratio:.3f} (goal >= {GOAL}): "
          f"{'met' if ratio >= GOAL else 'NOT met'}")
    memory = measure_memory(args, workdir, command)
    if memory:
        for row in memory:
            row.update({k: v for k, v in base.items() if k not in row})
            row.update(baseline=0, is_copy=0)
        rows += finish_rows(memory, info, ratios=False)
        ok = [r for r in memory if r.get("status") == "ok"]
        if len(ok) >= 2:
            spread = max(r["peak_mb"] for r in ok) - min(r["peak_mb"] for r in ok)
            print("peak RSS growth: " + ", ".join(f"{r['shape'].split('x')[0]} frames "
                                                  f"{r['peak_mb']:.1f} MiB" for r in ok)
                  + f"; difference {spread:.1f} MiB")
    print(f"wrote {write_csv(args.csv, rows)}")
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
