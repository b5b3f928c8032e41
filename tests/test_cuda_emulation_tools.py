"""The CUDA-emulation harness itself (tests/cuda_emulation), without its minutes-long runs (those
are `python -m tests.cuda_emulation`, in CI): the kernel-launch rewrite, the emulation header's
barriers and shuffles (a small C++ self-test), and the case generators' coverage."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from tests.cuda_emulation import build, run_instance_norm, run_padded_conv


def test_launch_rewrite():
    source = ("fwd<T, VEC><<<dim3(n, s), 256, 0, stream>>>(x, y,\n    p);\n"
              "other(1);\nbwd<<<grid, threads>>>(a);")
    text, count = build.rewrite_launches(source)
    assert count == 2
    assert "::sf_emu::launch([&] { fwd<T, VEC>(x, y,\n    p); }, dim3(n, s), 256, 0, stream);" in text
    assert "::sf_emu::launch([&] { bwd(a); }, grid, threads);" in text
    assert "other(1);" in text and "<<<" not in text


@pytest.mark.parametrize("op", sorted(build.OPS))
def test_every_kernel_file_has_launches_to_rewrite(op):
    kernels, driver = build.OPS[op]
    _, count = build.rewrite_launches((build.CUDA_SRC / kernels).read_text())
    assert count >= 3
    assert (build.HERE / driver).is_file()


def test_emulation_header_selftest(tmp_path):
    """__syncthreads_or over consecutive calls, a shuffle tree sum, early-returning threads."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "selftest"
    subprocess.run([cxx, "-std=c++20", "-O1", "-pthread", f"-I{build.HERE}",
                    str(build.HERE / "emulation_selftest.cpp"), "-o", str(exe)], check=True,
                   timeout=300)
    done = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout


def test_instance_norm_cases_cover_schedules_dtypes_and_options():
    cases = run_instance_norm.cases()
    assert len(cases) == 564
    assert {c[2] for c in cases} == {"on_chip", "looped", "split"}
    assert {c[1] for c in cases} == {"contiguous", "channels_last"}
    assert {c[3] for c in cases} == set(run_instance_norm.DTYPES)
    assert {(c[4], c[5], c[6]) for c in cases} == {
        (a, f, s) for a in (0, 1, 2) for f in ("none", "channel", "sample") for s in (False, True)}


def test_padded_conv_cases_cover_modes_strides_layouts_dtypes():
    cases = run_padded_conv.cases()
    assert len(cases) == 149
    folded = [c for c in cases if c.up > 1]
    # folded upsampling: every mode at x2 and x3, the two-tile / split geometries, stride 2,
    # the relu epilogue, half precision and float64
    assert {(c.mode, c.up) for c in folded} == {(m, u) for m in (0, 1, 2) for u in (2, 3)}
    assert {c.geometry for c in folded} >= set(run_padded_conv.GEOMETRIES[3:])
    assert {c.stride for c in folded} == {1, 2} and {c.activation for c in folded} == {0, 1}
    assert {torch.bfloat16, torch.float64} <= {c.dtype for c in folded}
    cases = [c for c in cases if c.up == 1]
    relu = [c for c in cases if c.activation == 1]
    # the relu epilogue: every geometry in both layouts and strides, every mode and dtype
    assert {(c.geometry, c.layout, c.stride) for c in relu if c.dtype == torch.float32} == {
        (g, layout, s) for g in run_padded_conv.GEOMETRIES for layout in ("contiguous", "channels_last")
        for s in (1, 2)}
    assert {c.mode for c in relu} == {0, 1, 2} and len({c.dtype for c in relu}) == 4
    f32 = [c for c in cases if c.dtype == torch.float32 and c.layout != "strided"]
    # float32: every geometry in both layouts, both strides, all three padding modes
    assert {(c.geometry, c.layout, c.stride, c.mode) for c in f32} == {
        (g, layout, s, m) for g in run_padded_conv.GEOMETRIES for layout in ("contiguous", "channels_last")
        for s in (1, 2) for m in (0, 1, 2)}
    others = [c for c in cases if c.dtype != torch.float32]
    assert {c.dtype for c in others} == {torch.float16, torch.bfloat16, torch.float64}
    assert {(c.dtype, c.stride, c.mode) for c in others} == {
        (d, s, m) for d in (torch.float16, torch.bfloat16, torch.float64) for s in (1, 2)
        for m in (0, 1, 2)}
    assert {c.layout for c in others} == {"contiguous", "channels_last"}
    assert {c.mode for c in cases if c.layout == "strided"} == {0, 1, 2}
    assert {c.bias for c in cases} == {True, False}


def test_padded_conv_geometries_reach_the_multi_tile_paths():
    """C_out > 64 (two forward column tiles), C_in > 64 (two input-gradient column tiles),
    > 256 output rows (weight gradient split), reflect padding of size - 1 (all border
    variants), odd sizes; and reflect padding stays valid (pad < size)."""
    geoms = run_padded_conv.GEOMETRIES
    assert max(g.c_out for g in geoms) > 64 and max(g.shape[1] for g in geoms) > 64
    rows = [g.shape[0] * (g.shape[2] + 2 * g.padding[0] - g.kernel[0] + 1)
            * (g.shape[3] + 2 * g.padding[1] - g.kernel[1] + 1) for g in geoms]
    assert max(rows) > 2 * 256
    assert any(g.padding[0] == g.shape[2] - 1 for g in geoms)
    assert any(g.shape[2] % 2 and g.shape[3] % 2 for g in geoms)
    assert all(g.padding[0] < g.shape[2] and g.padding[1] < g.shape[3] for g in geoms)
