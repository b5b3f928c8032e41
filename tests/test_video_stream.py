"""The streaming video pipeline (stylize_fast.inference.stream / video / raw_io): overlap,
bounded memory, order, equality with the old sequential path, audio, raw stdin / stdout, image
sequences, and errors that leave no partial output."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

from stylize_fast.cli import main
from stylize_fast.inference import Stylizer, collect_jobs
from stylize_fast.inference.stream import run_pipeline
from stylize_fast.inference.video import ENCODER_PRESET, StreamOptions, stylize_stream, stylize_video
from stylize_fast.models import JohnsonNet, save

av = pytest.importorskip("av", reason="PyAV (pip install av) not installed")
from tests.video_helpers import camera_pan, photo, read_video, write_video  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*PaddedConv2d is not available")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


# -- helpers ------------------------------------------------------------------------------------


def small_model():
    torch.manual_seed(0)
    return JohnsonNet("fused", channels=4, num_residual=1)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pth"
    save(small_model(), path)
    return str(path)


@pytest.fixture(scope="module")
def clip():
    """12 frames of a camera pan over a photo, 64x64."""
    return camera_pan(photo(size=(160, 160)), 12, SIZE, step=(3, 2))


def listing(folder) -> list[str]:
    """Every name in ``folder`` (hidden temporary files included)."""
    return sorted(os.listdir(folder))


def write_video_with_audio(path, frames, fps=10, audio_codec="aac", seconds=None, rate=16000):
    """``frames`` as a video plus a 440 Hz tone as long as the video (``audio_codec``)."""
    seconds = len(frames) / fps if seconds is None else seconds
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        audio = container.add_stream(audio_codec, rate=rate)
        audio.layout = "mono"
        fmt = audio.codec_context.format.name
        samples = int(seconds * rate)
        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)
        chunk = 1024
        chunks = []
        for start in range(0, samples, chunk):
            part = tone[start:start + chunk]
            if fmt.startswith("flt"):
                data = part.astype(np.float32)[None]
            elif fmt.startswith("u8"):
                data = (128 + part * 127).astype(np.uint8)[None]
            else:
                data = (part * 32767).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, start
            chunks.append(frame)
        # Interleave roughly in time, as a real file is.
        per_video = len(chunks) / len(frames)
        a = 0
        for i, rgb in enumerate(frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
            while a < len(chunks) and a < (i + 1) * per_video:
                container.mux(audio.encode(chunks[a]))
                a += 1
        for frame in chunks[a:]:
            container.mux(audio.encode(frame))
        container.mux(video.encode())
        container.mux(audio.encode())


def stream_info(path):
    with av.open(str(path)) as container:
        info = {"video": len(container.streams.video), "audio": len(container.streams.audio)}
        for kind in ("video", "audio"):
            streams = getattr(container.streams, kind)
            if streams:
                s = streams[0]
                info[f"{kind}_codec"] = s.codec_context.name
                info[f"{kind}_duration"] = float(s.duration * s.time_base) if s.duration else None
        info["duration"] = container.duration / 1e6 if container.duration else None
    return info


def sequential_reference(stylizer, src, dst):
    """The pre-pipeline ``stylize_video``: decode, stylise, encode one after the other."""
    with av.open(src) as source:
        stream = source.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        with av.open(dst, mode="w") as sink:
            out = sink.add_stream(codec, rate=rate)
            out.width, out.height = width, height
            out.pix_fmt = "yuv420p"
            if codec == "libx264":
                out.options = {"crf": "18", "preset": ENCODER_PRESET}
            frames = (f.to_ndarray(format="rgb24") for f in source.decode(stream))
            for rgb in stylizer.iter_batches(frames):
                for packet in out.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    sink.mux(packet)
            for packet in out.encode():
                sink.mux(packet)


class SleepyStylizer:
    """Identity 'model' that takes ``seconds`` per batch (sleeping: no CPU needed)."""

    def __init__(self, batch_size=2, seconds=0.0, fail_at_batch=None):
        self.batch_size, self.seconds, self.fail_at_batch = batch_size, seconds, fail_at_batch
        self.progress = False
        self.calls = 0
        self.active = None  # a shared counter, see Concurrency

    def stylize_tensor(self, x):
        if self.fail_at_batch is not None and self.calls == self.fail_at_batch:
            raise RuntimeError("model exploded")
        self.calls += 1
        with self.active or _Null():
            time.sleep(self.seconds)
        return x.float()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Concurrency:
    """Counts stages inside their timed section at once; ``peak`` is the most at a time."""

    def __init__(self):
        self.lock, self.now, self.peak = threading.Lock(), 0, 0

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1
        return False


class ListWriter:
    """Keeps copies of what it is given; optional sleep per batch and failure."""

    def __init__(self, seconds=0.0, fail_at_batch=None, active=None):
        self.frames, self.seconds, self.fail_at_batch = [], seconds, fail_at_batch
        self.active = active
        self.batches = 0
        self.finished = self.committed = self.aborted = False

    def write(self, frames):
        if self.fail_at_batch is not None and self.batches == self.fail_at_batch:
            raise OSError("disk full")
        self.batches += 1
        with self.active or _Null():
            time.sleep(self.seconds)
        self.frames.extend(f.copy() for f in frames)

    def finish(self):
        self.finished = True

    def commit(self):
        self.committed = True

    def abort(self):
        self.aborted = True


def numbered_frames(n, h=8, w=6):
    """Frame i is filled with i (so order and count can be read back)."""
    return [np.full((h, w, 3), i, np.uint8) for i in range(n)]


# -- the pipeline itself ------------------------------------------------------------------------


def test_stages_overlap():
    """Reading, the model and writing each take ~0.05 s per batch (sleeps); in turn 10
    batches would take ~1.5 s, overlapped ~0.55 s."""
    active = Concurrency()
    per_batch, batches, batch_size = 0.05, 10, 2

    def slow_frames():
        for frame in numbered_frames(batches * batch_size):
            with active:
                time.sleep(per_batch / batch_size)
            yield frame

    stylizer = SleepyStylizer(batch_size, per_batch)
    stylizer.active = active
    writer = ListWriter(per_batch, active=active)
    t0 = time.perf_counter()
    stats = run_pipeline(stylizer, slow_frames(), writer)
    elapsed = time.perf_counter() - t0
    sequential = 3 * per_batch * batches
    assert stats.frames == len(writer.frames) == batches * batch_size
    assert active.peak == 3, "the three stages never ran at the same time"
    assert elapsed < 0.7 * sequential, (elapsed, sequential)
    assert stats.model_seconds == pytest.approx(per_batch * batches, rel=0.5)
    assert stats.fps > stats.frames / sequential


@pytest.mark.parametrize("queue_batches", [1, 2, 3])
def test_memory_is_bounded(queue_batches):
    """A fast reader in front of a slow writer: frames read but not yet written never exceed
    what the queues and buffer pools can hold, whatever the length."""
    batch_size, n = 3, 90
    produced, written, in_flight = [0], [0], []

    def fast_frames():
        for frame in numbered_frames(n):
            produced[0] += 1
            in_flight.append(produced[0] - written[0])
            yield frame

    class CountingWriter(ListWriter):
        def write(self, frames):
            time.sleep(0.005)
            super().write(frames)
            written[0] += len(frames)

    stats = run_pipeline(SleepyStylizer(batch_size), fast_frames(), CountingWriter(),
                         queue_batches=queue_batches)
    bound = 2 * (queue_batches + 2) * batch_size + 1
    assert stats.frames == n
    assert max(in_flight) <= bound, (max(in_flight), bound)
    assert max(in_flight) >= queue_batches * batch_size  # the queues did fill up
    assert stats.queue_high_water["in"] <= queue_batches
    assert stats.queue_high_water["out"] <= queue_batches
    assert max(stats.buffers.values()) <= queue_batches + 2


@pytest.mark.parametrize("n, batch_size", [(10, 3), (9, 3), (1, 4), (7, 1)])
def test_order_and_count_preserved(n, batch_size):
    writer = ListWriter()
    stats = run_pipeline(SleepyStylizer(batch_size), iter(numbered_frames(n)), writer)
    assert stats.frames == n and writer.committed and writer.finished
    assert [int(f[0, 0, 0]) for f in writer.frames] == list(range(n))


def test_frame_size_change_is_an_error():
    frames = numbered_frames(3) + [np.zeros((4, 6, 3), np.uint8)]
    writer = ListWriter()
    with pytest.raises(ValueError, match="frame 3 is 6x4, the frames before it 6x8"):
        run_pipeline(SleepyStylizer(2), iter(frames), writer)
    assert writer.aborted and not writer.committed


def test_empty_input_is_an_error():
    writer = ListWriter()
    writer.finish = lambda: (_ for _ in ()).throw(ValueError("no frames to write"))
    with pytest.raises(ValueError, match="no frames"):
        run_pipeline(SleepyStylizer(2), iter([]), writer)
    assert writer.aborted and not writer.committed


@pytest.mark.parametrize("where", ["reader", "model", "writer"])
def test_errors_propagate_without_hanging(where):
    """A failure in any stage reaches the caller (the first one, unchanged), aborts the
    writer, and no stage is left blocked on a full or empty queue."""
    def frames():
        for i, frame in enumerate(numbered_frames(200)):
            if where == "reader" and i == 37:
                raise ValueError("clip.mp4: cannot decode frame 37: bad data")
            yield frame

    stylizer = SleepyStylizer(2, fail_at_batch=5 if where == "model" else None)
    writer = ListWriter(fail_at_batch=3 if where == "writer" else None)
    expected = {"reader": (ValueError, "frame 37"), "model": (RuntimeError, "exploded"),
                "writer": (OSError, "disk full")}[where]
    before = threading.active_count()
    t0 = time.perf_counter()
    with pytest.raises(expected[0], match=expected[1]):
        run_pipeline(stylizer, frames(), writer)
    assert time.perf_counter() - t0 < 10
    assert writer.aborted and not writer.committed
    assert threading.active_count() == before  # reader and writer threads have ended


# -- videos -------------------------------------------------------------------------------------


def test_video_equals_sequential_path(tmp_path, clip):
    """The pipeline's output decodes to exactly the frames of the old one-thread path."""
    src = tmp_path / "clip.mp4"
    write_video(src, clip, fps=10)
    stylizer = Stylizer(small_model(), batch_size=4)
    sequential_reference(stylizer, str(src), str(tmp_path / "old.mp4"))
    assert stylize_video(stylizer, src, tmp_path / "new.mp4") == len(clip)
    old, new = read_video(tmp_path / "old.mp4"), read_video(tmp_path / "new.mp4")
    assert len(new) == len(old) == len(clip)
    for i, (a, b) in enumerate(zip(old, new)):
        assert np.array_equal(a, b), f"frame {i}: max |diff| {np.abs(a.astype(int) - b).max()}"
    with av.open(str(tmp_path / "new.mp4")) as c:
        assert c.streams.video[0].average_rate == 10
    assert listing(tmp_path) == ["clip.mp4", "new.mp4", "old.mp4"]  # no temporary left


@pytest.mark.parametrize("ext, audio_codec, expect_codec", [
    (".mp4", "aac", "aac"),        # the container takes AAC: packets copied
    (".mkv", "pcm_u8", "aac"),     # MP4 does not take 8-bit PCM: transcoded to AAC
])
def test_audio_is_carried_over(tmp_path, clip, ext, audio_codec, expect_codec):
    if audio_codec not in av.codecs_available:
        pytest.skip(f"no {audio_codec} encoder in PyAV's FFmpeg")
    src = tmp_path / f"clip{ext}"
    write_video_with_audio(src, clip, fps=10, audio_codec=audio_codec)
    assert stream_info(src)["audio"] == 1
    stylizer = Stylizer(small_model(), batch_size=4)
    assert stylize_video(stylizer, src, tmp_path / "out.mp4") == len(clip)
    info = stream_info(tmp_path / "out.mp4")
    assert info["video"] == 1 and info["audio"] == 1
    assert info["audio_codec"] == expect_codec
    seconds = len(clip) / 10
    assert info["audio_duration"] == pytest.approx(seconds, abs=0.15)
    assert info["video_duration"] == pytest.approx(seconds, abs=0.15)
    with av.open(str(tmp_path / "out.mp4")) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert samples / 16000 == pytest.approx(seconds, abs=0.15)
    assert len(read_video(tmp_path / "out.mp4")) == len(clip)


def corrupt_mp4(path, clip):
    """A playable-looking MP4 whose middle is overwritten with noise (decoding fails partway,
    as with a damaged download)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.height, stream.width = clip[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(20):  # noise frames: every frame is large, so the damage is mid-stream
            frame = (rng.random(clip[0].shape) * 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    data = bytearray(path.read_bytes())
    n = len(data)
    data[n // 2:n // 2 + n // 8] = np.random.default_rng(1).bytes(n // 8)
    path.write_bytes(bytes(data))


def test_corrupt_video_is_a_clear_error_and_leaves_no_output(tmp_path, clip, model_file,
                                                              capsys):
    src = tmp_path / "broken.mp4"
    corrupt_mp4(src, clip)
    out = tmp_path / "out"
    out.mkdir()
    (out / "broken.mp4").write_bytes(b"previous result")
    stylizer = Stylizer(small_model(), batch_size=2)
    with pytest.raises(ValueError, match=r"broken\.mp4: cannot decode frame \d+"):
        stylize_video(stylizer, src, out / "broken.mp4")
    assert listing(out) == ["broken.mp4"]
    assert (out / "broken.mp4").read_bytes() == b"previous result"
    # The command line says so and fails.
    rc = main(["stylize", "--model", model_file, "--input", str(src), "--output", str(out),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot decode frame" in err and "broken.mp4" in err
    assert listing(out) == ["broken.mp4"]
    assert (out / "broken.mp4").read_bytes() == b"previous result"


def test_failed_model_leaves_no_partial_file(tmp_path, clip):
    src = tmp_path / "clip.mp4"
    write_video(src, clip, fps=10)
    with pytest.raises(RuntimeError, match="exploded"):
        stylize_video(SleepyStylizer(2, fail_at_batch=3), src, tmp_path / "out" / "new.mp4")
    assert listing(tmp_path / "out") == []


# -- raw frames, image sequences, the command line ----------------------------------------------


def test_raw_stdin_to_stdout_through_the_cli(tmp_path, model_file):
    """``... --input - --size 64x48 --output -`` in a subprocess: stdout is exactly the
    stylised frames (progress, with the model's rate, on stderr)."""
    frames = [f[:48] for f in camera_pan(photo(size=(160, 160)), 5, SIZE, step=(3, 2))]
    cmd = [sys.executable, "-m", "stylize_fast", "stylize", "--model", model_file,
           "--input", "-", "--size", "64x48", "--output", "-", "--batch-size", "2"]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames),
                          capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(proc.stdout) == 5 * 48 * 64 * 3
    got = np.frombuffer(proc.stdout, np.uint8).reshape(5, 48, 64, 3)
    stylizer = Stylizer(model_file, batch_size=2)
    want = np.stack(list(stylizer.iter_batches(iter(frames))))
    assert np.array_equal(got, want)
    err = proc.stderr.decode()
    assert "frame/s" in err and "model" in err


def fake_stdin(monkeypatch, data: bytes):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_raw_stdin_to_video(tmp_path, model_file, monkeypatch):
    frames = numbered_frames(7, 48, 64)
    fake_stdin(monkeypatch, b"".join(f.tobytes() for f in frames))
    rc = main(["stylize", "--model", model_file, "--input", "-", "--size", "64x48",
               "--output", str(tmp_path / "raw.mp4"), "--fps", "12", "--no-progress"])
    assert rc == 0
    with av.open(str(tmp_path / "raw.mp4")) as c:
        assert c.streams.video[0].average_rate == 12
    assert len(read_video(tmp_path / "raw.mp4")) == 7


def test_truncated_raw_input_is_an_error_and_keeps_the_old_output(tmp_path, model_file,
                                                                    monkeypatch, capsys):
    frame_bytes = 64 * 48 * 3
    fake_stdin(monkeypatch, bytes(frame_bytes * 2 + frame_bytes // 2))
    (tmp_path / "raw.mp4").write_bytes(b"previous result")
    rc = main(["stylize", "--model", model_file, "--input", "-", "--size", "64x48",
               "--output", str(tmp_path / "raw.mp4"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "truncated raw input: frame 2 has 4608 of 9216 bytes" in err
    assert (tmp_path / "raw.mp4").read_bytes() == b"previous result"
    assert listing(tmp_path) == ["raw.mp4"]


def write_frames(folder, frames, pattern):
    from PIL import Image

    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / (pattern % (i + 1)))


def test_image_sequence_folder_to_video(tmp_path, clip, model_file):
    """``--input DIR --sequence``: frames in natural name order (f2 before f10)."""
    write_frames(tmp_path / "seq", clip, "f%d.png")  # f1.png ... f12.png
    rc = main(["stylize", "--model", model_file, "--input", str(tmp_path / "seq"), "--sequence",
               "--output", str(tmp_path / "seq.mp4"), "--fps", "8", "--no-progress",
               "--strength", "0"])  # strength 0: the output is the input, to check the order
    assert rc == 0
    with av.open(str(tmp_path / "seq.mp4")) as c:
        assert c.streams.video[0].average_rate == 8
    got = read_video(tmp_path / "seq.mp4")
    assert len(got) == len(clip)
    for i, frame in enumerate(got):  # each decoded frame is closest to its own input frame
        errors = [np.abs(frame.astype(int) - f).mean() for f in clip]
        assert int(np.argmin(errors)) == i


def test_image_sequence_pattern_to_frames(tmp_path, clip, model_file):
    """``--input frames/%03d.png`` (numbered from 1) into a folder keeps the frame names;
    into a pattern numbers from 1; frames equal the Stylizer's, batch for batch."""
    write_frames(tmp_path / "frames", clip[:7], "%03d.png")
    pattern = str(tmp_path / "frames" / "%03d.png")
    rc = main(["stylize", "--model", model_file, "--input", pattern, "--output",
               str(tmp_path / "styled"), "--batch-size", "3", "--no-progress"])
    assert rc == 0
    names = [f"{i:03d}.png" for i in range(1, 8)]
    assert listing(tmp_path / "styled") == names
    stylizer = Stylizer(model_file, batch_size=3)
    want = list(stylizer.iter_batches(iter(clip[:7])))
    from PIL import Image

    for name, w in zip(names, want):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "styled" / name)), w)
    rc = main(["stylize", "--model", model_file, "--input", pattern, "--output",
               str(tmp_path / "numbered" / "out_%05d.jpg"), "--no-progress"])
    assert rc == 0
    assert listing(tmp_path / "numbered") == [f"out_{i:05d}.jpg" for i in range(1, 8)]


def test_image_sequence_of_mixed_sizes_fails_cleanly(tmp_path, clip, model_file):
    frames = list(clip[:5])
    frames[3] = frames[3][:32]
    write_frames(tmp_path / "seq", frames, "%02d.png")
    stylizer = Stylizer(model_file, batch_size=2)
    with pytest.raises(ValueError, match=r"frame 3 .*04\.png.* is 64x32, the sequence is 64x64"):
        stylize_stream(stylizer, str(tmp_path / "seq"), str(tmp_path / "out.mp4"),
                       StreamOptions(sequence=True))
    assert not (tmp_path / "out.mp4").exists()
    assert listing(tmp_path) == ["seq"]
    with pytest.raises(ValueError, match="frame 3"):  # frames into a new folder: removed again
        stylize_stream(stylizer, str(tmp_path / "seq"), str(tmp_path / "frames_out"),
                       StreamOptions(sequence=True))
    assert listing(tmp_path) == ["seq"]


def test_collect_jobs_for_streams(tmp_path, clip):
    (tmp_path / "seq").mkdir()
    write_video(tmp_path / "a.mp4", clip[:2], fps=10)
    assert collect_jobs(["-"], "-") == [("-", "-")]
    assert collect_jobs(["-"], str(tmp_path / "o.mp4")) == [("-", str(tmp_path / "o.mp4"))]
    assert collect_jobs([str(tmp_path / "a.mp4")], "-") == [(str(tmp_path / "a.mp4"), "-")]
    assert collect_jobs([str(tmp_path / "seq")], str(tmp_path / "o.mp4"), sequence=True) \
        == [(str(tmp_path / "seq"), str(tmp_path / "o.mp4"))]
    assert collect_jobs(["/dev/video0"], str(tmp_path / "cam.mp4"), input_format="v4l2") \
        == [("/dev/video0", str(tmp_path / "cam.mp4"))]
    with pytest.raises(ValueError, match="exactly one input"):
        collect_jobs(["-", str(tmp_path / "a.mp4")], "-")
    with pytest.raises(ValueError, match="needs a video"):
        collect_jobs([str(tmp_path / "seq")], "-")  # a folder of images without --sequence
    with pytest.raises(ValueError, match="video file, a frame pattern"):
        collect_jobs([str(tmp_path / "seq")], str(tmp_path / "x.png"), sequence=True)


def test_cli_flag_errors(tmp_path, model_file, capsys):
    rc = main(["stylize", "--model", model_file, "--input", "-", "--output", "-"])
    assert rc == 1 and "needs --size" in capsys.readouterr().err
    rc = main(["stylize", "--model", model_file, "--input", "-", "--size", "64by48",
               "--output", "-"])
    assert rc == 1 and "WIDTHxHEIGHT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["stylize", "--model", model_file, "--input", "-", "--size", "8x8",
              "--output", "-", "--fps", "0"])
