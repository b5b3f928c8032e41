"""Build script for stylize_fast: the C++ CPU extension always, the CUDA kernels when possible.

Build against the torch you have installed:  pip install --no-build-isolation -e .

Switches (environment variables):
  STYLIZE_FAST_FORCE_CUDA=1  build the CUDA kernels or fail loudly (e.g. CUDA torch + nvcc, no GPU)
  STYLIZE_FAST_NO_CUDA=1     never build them
  STYLIZE_FAST_BASELINE_CPU_ONLY=1  compile the CPU kernels for the baseline instruction set
                             only (no AVX2 / AVX-512 copies): several times quicker to build, slower
                             CPU kernels; for GPU checks on a machine with little build time
  TORCH_CUDA_ARCH_LIST, MAX_JOBS are honoured as by torch.utils.cpp_extension.
What was built is recorded in stylize_fast/_build_info.json (read by `stylize-fast info`).
"""

from __future__ import annotations

import glob
import json
import os
import platform
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "stylize_fast"


def _version() -> str:
    scope: dict = {}
    with open(os.path.join(ROOT, PACKAGE, "_version.py")) as f:
        exec(f.read(), scope)
    return scope["__version__"]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _sources(*patterns: str) -> list[str]:
    found: list[str] = []
    for pattern in patterns:
        found += sorted(glob.glob(os.path.join("csrc", pattern)))
    return found


def _cuda_home(cpp_extension) -> str | None:
    """The CUDA toolkit to build with. torch's guess from `which nvcc` is wrong when nvcc on PATH
    is a wrapper script (e.g. /usr/local/bin/nvcc -> CUDA_HOME=/usr/local), so a guess without
    bin/nvcc and include/cuda_runtime.h is replaced by the first real toolkit found."""

    def is_toolkit(path: str | None) -> bool:
        return bool(path) and os.path.isfile(os.path.join(path, "bin", "nvcc")) and \
            os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))

    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME,
                  "/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    for path in candidates:
        if is_toolkit(path):
            return path
    return None


# Architectures of a forced CUDA build on a machine without a GPU (A100, H100).
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def _want_cuda(torch, cpp_extension) -> tuple[bool, str]:
    """Decide whether to compile csrc/cuda; returns (build?, reason in one line)."""
    force, never = _flag("STYLIZE_FAST_FORCE_CUDA"), _flag("STYLIZE_FAST_NO_CUDA")
    if force and never:
        sys.exit("setup.py: STYLIZE_FAST_FORCE_CUDA and STYLIZE_FAST_NO_CUDA are both set; pick one.")
    if never:
        return False, "CUDA build disabled by STYLIZE_FAST_NO_CUDA=1"
    problems = []
    if torch.version.cuda is None:
        problems.append(f"installed torch {torch.__version__} is a CPU-only build")
    cuda_home = _cuda_home(cpp_extension)
    if cuda_home is None:
        problems.append("nvcc / CUDA toolkit not found (set CUDA_HOME)")
    if not _sources("cuda/*.cu"):
        problems.append("no CUDA sources in csrc/cuda")
    if problems:
        if force:
            sys.exit("setup.py: STYLIZE_FAST_FORCE_CUDA=1 but cannot build CUDA: " + "; ".join(problems))
        return False, "CPU-only build (" + "; ".join(problems) + ")"
    # torch's builder takes the architectures from TORCH_CUDA_ARCH_LIST, else from the visible
    # GPUs; with neither it fails deep inside (an isolated `pip install .` on a GPU-less machine
    # with nvcc gets there). Automatic builds then stay CPU-only; forced ones take a default.
    if not os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip() and not torch.cuda.is_available():
        if not force:
            return False, ("CPU-only build (no GPU visible and TORCH_CUDA_ARCH_LIST unset: no CUDA "
                           "architecture to build for; set TORCH_CUDA_ARCH_LIST, e.g. "
                           f"'{DEFAULT_CUDA_ARCHS}', or STYLIZE_FAST_FORCE_CUDA=1)")
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    # torch's builder reads its module-level CUDA_HOME when it compiles and links.
    cpp_extension.CUDA_HOME = cuda_home
    os.environ["CUDA_HOME"] = cuda_home
    return True, f"CUDA build with CUDA {torch.version.cuda} at {cuda_home}"


def _extensions():
    import torch
    from torch.utils import cpp_extension

    build_cuda, reason = _want_cuda(torch, cpp_extension)
    print(f"stylize_fast: {reason}", flush=True)

    # -fopenmp: at::parallel_for is a header template that runs serially unless _OPENMP is
    # defined; the extension then shares torch's own libgomp (same soname, already loaded).
    cxx_flags = ["-O3", "-fno-math-errno", "-fopenmp", "-Wall", "-Wno-unknown-pragmas"]
    nvcc_flags = ["-O3", "--use_fast_math", "-lineinfo", "-Xptxas=-v", "--expt-relaxed-constexpr"]
    sources = _sources("*.cpp", "cpu/*.cpp")
    define_macros = []
    baseline_cpu_only = _flag("STYLIZE_FAST_BASELINE_CPU_ONLY")
    if baseline_cpu_only:
        define_macros.append(("SF_BASELINE_CPU_ONLY", "1"))
    ext_cls = cpp_extension.CppExtension
    extra = {"cxx": cxx_flags}
    if build_cuda:
        ext_cls = cpp_extension.CUDAExtension
        sources += _sources("cuda/*.cpp", "cuda/*.cu")
        define_macros.append(("STYLIZE_FAST_WITH_CUDA", "1"))
        # -Xptxas=-v prints registers / spills / stack per kernel (scripts/check_cuda_build.sh
        # turns it into the resource report); host-side warnings of .cu files are shown too.
        extra["nvcc"] = nvcc_flags + ["-Xcompiler=-Wall", "-Xcompiler=-Wno-unknown-pragmas"]
        # torch's CUDA wheels ship the cuBLAS/cuSPARSE headers that its own headers include;
        # a bare toolkit (as on a build box without the full SDK) may lack them. Appended after
        # the toolkit's own include dir so the toolkit's runtime headers win.
        for spec in ("nvidia/cu13/include", "nvidia/cu12/include", "nvidia/cuda_runtime/include"):
            for base in sys.path:
                candidate = os.path.join(base, spec)
                if os.path.isdir(candidate) and not os.path.isfile(
                        os.path.join(cpp_extension.CUDA_HOME, "include", "cusparse.h")):
                    extra["nvcc"] = extra["nvcc"] + ["-I" + candidate]
                    extra["cxx"] = extra["cxx"] + ["-idirafter", candidate]

    info = {
        "version": _version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_built": build_cuda,
        "reason": reason,
        "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if build_cuda else None,
        "cpu_isa_copies": "default" if baseline_cpu_only else "default,avx2,avx512,avx512_bf16",
        "cxx_flags": extra["cxx"],
        "nvcc_flags": extra.get("nvcc"),
        "compiler": os.environ.get("CXX", "c++"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sources": sources,
    }
    with open(os.path.join(ROOT, PACKAGE, "_build_info.json"), "w") as f:
        json.dump(info, f, indent=1)

    ext = ext_cls(
        name=f"{PACKAGE}._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        # setuptools compares only source timestamps; headers hold kernel bodies too.
        depends=sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*.h"), recursive=True)),
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)}


def _maybe_extensions():
    # Metadata-only invocations (egg_info, sdist) should not need torch.
    if any(cmd in sys.argv for cmd in ("egg_info", "sdist", "--name", "--version")):
        return [], {}
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit(
            "setup.py: torch must be installed first and the build run without isolation:\n"
            "  pip install torch==2.13.0 && pip install --no-build-isolation -e ."
        )
    return _extensions()


ext_modules, cmdclass = _maybe_extensions()

setup(
    name="stylize_fast",
    version=_version(),
    description="Fast feed-forward neural style transfer: fused instance-norm and padded-conv kernels",
    long_description=open(os.path.join(ROOT, "README.md")).read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["_build_info.json"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=[
        # Bounded: an unbounded torch requirement pulls a multi-GB CUDA build on CPU machines.
        "torch>=2.13,<=2.14.1",
        "numpy",
        "pillow",
        "tqdm",
        # `stylize-fast bench`, the package's main job, draws its bar charts with it.
        "matplotlib",
    ],
    extras_require={
        "triton": ["triton"],
        "plot": ["matplotlib"],
        "video": ["av", "opencv-python-headless"],
        "png16": ["pypng"],
        "export": ["onnx", "onnxruntime"],
        "dev": ["pytest", "pytest-benchmark", "matplotlib", "ruff", "expecttest"],
    },
    entry_points={"console_scripts": ["stylize-fast=stylize_fast.cli:main"]},
    zip_safe=False,
)
