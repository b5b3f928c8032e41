"""Shared fixtures. Without a GPU, Triton kernels run in Triton's CPU interpreter: the variable
must be set before any @triton.jit kernel is defined, so it is set here, before imports.

STYLIZE_FAST_LARGE=1 adds large shapes (meant for a GPU machine: scripts/verify_gpu.sh).

Under CI (``CI=true``, as .ci/run sets it) a test skipped for something missing (the compiled
extension, a backend that should exist, a test dependency of requirements-dev.txt) FAILS
instead: CI must not go green on the reference alone. The header always says which backends
ran, and warns when the compiled extension is not loaded."""

import importlib.machinery
import os
import re
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import stylize_fast as sf  # noqa: E402

LARGE = sf.config.get("large")  # STYLIZE_FAST_LARGE
# Backends that run on CPU tensors on this machine, the reference last (it is also ground truth).
# Triton takes CPU tensors only in its interpreter, which is off where a GPU is visible.
CPU_TENSOR_BACKENDS = [b for b in ("cpu", "triton", "reference") if sf.backends.available()[b]
                       and (b != "triton" or sf.backends.triton_interpreted())]
CUDA_TENSOR_BACKENDS = [b for b in ("cuda", "triton", "reference")
                        if torch.cuda.is_available() and sf.backends.available()[b]]


CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
# Skip reasons meaning "something this checkout needs is missing" (tests/ and pytest's wording).
MISSING = re.compile(r"not built|C\+\+ extension|backend unavailable|not installed|"
                     r"could not import|no module named", re.IGNORECASE)


def _installed_elsewhere() -> str | None:
    """Path of another stylize_fast on sys.path that has a compiled extension, when the one
    imported (e.g. a checkout, first on sys.path under pytest) has none."""
    here = os.path.realpath(os.path.dirname(os.path.dirname(sf.__file__)))
    paths = [p for p in sys.path if p and os.path.realpath(p) != here]
    spec = importlib.machinery.PathFinder.find_spec("stylize_fast", paths)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        if any(n.startswith("_C.") and n.endswith((".so", ".pyd")) for n in os.listdir(folder)):
            return folder
    return None


def _missing_extension_message() -> str:
    where = os.path.dirname(sf.__file__)
    msg = (f"the C++ extension of {where} is not loaded ({sf.backends.unavailable_reason('cpu')})"
           ": the cpu backend's tests are SKIPPED and only the reference"
           + (" and Triton" if sf.backends.available()["triton"] else "") + " run")
    other = _installed_elsewhere()
    if other:
        msg += (f"; an installed stylize_fast with an extension is at {other}, but the checkout "
                "shadows it: build the checkout (`pip install --no-build-isolation -e .`)")
    return msg


def foreign_extension() -> str | None:
    """The loaded extension's file when it is not in the imported package's folder: e.g. a
    checkout without a build whose ``stylize_fast._C`` an editable install of another tree
    supplied (its meta-path finder answers for submodules the checkout lacks)."""
    module = sys.modules.get("stylize_fast._C")
    if module is None or not getattr(module, "__file__", None):
        return None
    folder = os.path.realpath(os.path.dirname(sf.__file__))
    if os.path.realpath(os.path.dirname(module.__file__)) == folder:
        return None
    return (f"the compiled extension was loaded from {module.__file__}, not from the imported "
            f"package {folder}: another tree's kernels are being tested with this tree's Python")


def pytest_report_header(config):
    avail = sf.backends.available()
    runs = ", ".join(f"{b}: {'yes' if ok else 'NO, ' + sf.backends.unavailable_reason(b)}"
                     for b, ok in avail.items())
    lines = [f"stylize_fast {sf.__version__} from {os.path.dirname(sf.__file__)}",
             f"stylize_fast backends: {runs}",
             "CI mode (CI=true): skips for missing requirements fail" if CI else
             "not CI: tests needing a missing extension / backend / dependency are skipped"]
    if not avail["cpu"]:
        lines.append("WARNING: " + _missing_extension_message())
    if foreign_extension():
        lines.append("WARNING: " + foreign_extension())
    return lines


def pytest_configure(config):
    if not sf.backends.available()["cpu"]:
        config.issue_config_time_warning(pytest.PytestWarning(_missing_extension_message()), 2)
    if foreign_extension():
        config.issue_config_time_warning(pytest.PytestWarning(foreign_extension()), 2)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_missing_under_ci(report) -> None:
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if MISSING.search(reason):
            report.outcome = "failed"
            report.longrepr = f"CI=true: skipped for a missing requirement, which CI must have: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_missing_under_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_missing_under_ci(outcome.get_result())


def backend_ids(op: str) -> list[str]:
    """Backends with an implementation of ``op`` that can run on CPU tensors here."""
    impls = sf.backends.implementations(op)
    return [b for b in CPU_TENSOR_BACKENDS if b in impls]


def backend_devices(op: str) -> list:
    """pytest params (backend, device) for every backend of ``op`` runnable here, with ids like
    ``cpu-cpu`` or ``triton-cuda``."""
    impls = sf.backends.implementations(op)
    pairs = [(b, "cpu") for b in CPU_TENSOR_BACKENDS if b in impls]
    pairs += [(b, "cuda") for b in CUDA_TENSOR_BACKENDS if b in impls]
    return [pytest.param(b, d, id=f"{b}-{d}") for b, d in pairs]


def interpreted(backend: str, device: str) -> bool:
    """True for Triton kernels running in the (slow) CPU interpreter: use small shapes."""
    return backend == "triton" and device == "cpu"


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny shapes on a shared 2-core machine, where a second
    thread mostly waits on a barrier for a core someone else holds. Training and model tests
    use it (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
