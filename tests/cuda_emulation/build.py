"""Build a CUDA kernel file of csrc/cuda as a CPU torch extension under cuda_host_emulation.h.

The .cu file is compiled unchanged by the host compiler, except that its kernel launches
``k<<<grid, block, smem, stream>>>(args);`` are rewritten into
``::sf_emu::launch([&] { k(args); }, grid, block, smem, stream);``. The CUDA headers it includes
(cuda_runtime.h, cuda_fp16.h, ...) are shims that include the emulation header.
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
CUDA_SRC = HERE.parents[1] / "csrc" / "cuda"
CUDA_HEADERS = ("cuda_runtime.h", "cuda_runtime_api.h", "cuda_fp16.h", "cuda_bf16.h")

# op name -> (device code in csrc/cuda, CPU driver next to this file)
OPS = {
    "instance_norm": ("instance_norm_kernels.cu", "instance_norm_driver.cpp"),
    "padded_conv": ("padded_conv_kernels.cu", "padded_conv_driver.cpp"),
    # the padded conv's forward with its normalize-on-load flag on, and the statistics merge
    "norm_conv": ("padded_conv_kernels.cu", "norm_conv_driver.cpp"),
}

_LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[^<>;]*>)?)<<<(.+?)>>>\((.*?)\);", re.S)


def rewrite_launches(source: str) -> tuple[str, int]:
    """Kernel launches -> sf_emu::launch calls; returns the new text and the launch count."""
    return _LAUNCH.subn(
        lambda m: f"::sf_emu::launch([&] {{ {m.group(1)}({m.group(3)}); }}, {m.group(2)});", source)


def prepare(op: str, work_dir: Path) -> list[Path]:
    """Write the header shims and the rewritten kernels into work_dir; returns the sources."""
    kernels, driver = OPS[op]
    inc = work_dir / "inc"
    inc.mkdir(parents=True, exist_ok=True)
    for name in CUDA_HEADERS:
        (inc / name).write_text('#include "cuda_host_emulation.h"\n')
    (inc / "cuda_host_emulation.h").write_text((HERE / "cuda_host_emulation.h").read_text())
    text, count = rewrite_launches((CUDA_SRC / kernels).read_text())
    if count == 0:
        raise RuntimeError(f"{kernels}: no kernel launches found to rewrite")
    emulated = work_dir / f"{op}_kernels_emu.cpp"
    emulated.write_text(text)
    print(f"cuda emulation: {kernels}: {count} kernel launches rewritten", flush=True)
    return [HERE / driver, emulated]


def load(op: str, work_dir: str | Path):
    """Compile (or reuse from work_dir) and import the emulated extension of ``op``."""
    from torch.utils.cpp_extension import load as load_extension

    work_dir = Path(work_dir).resolve() / op
    work_dir.mkdir(parents=True, exist_ok=True)
    sources = prepare(op, work_dir)
    return load_extension(
        name=f"sf_cuda_emu_{op}", sources=[str(s) for s in sources],
        extra_cflags=["-std=c++20", "-O1", "-Wno-unknown-pragmas", f"-I{work_dir / 'inc'}",
                      f"-I{CUDA_SRC}"],
        extra_ldflags=["-lpthread"], build_directory=str(work_dir))
