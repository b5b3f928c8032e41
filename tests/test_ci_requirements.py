"""What CI must have: the compiled extension (cpu backend), Triton in the interpreter when
triton is installed, and every test dependency of requirements-dev.txt. Outside CI a missing
one is a skip (and the pytest header says so); under CI (CI=true) it is a failure."""

import importlib.util
import os

import pytest

import stylize_fast as sf

from .conftest import CI, foreign_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# requirements-dev.txt names whose import name differs.
IMPORT_NAMES = {"pillow": "PIL", "pypng": "png", "pytest-benchmark": "pytest_benchmark",
                "opencv-python-headless": "cv2", "scikit-image": "skimage"}


def _require(ok: bool, what: str) -> None:
    if ok:
        return
    if CI:
        pytest.fail(f"CI=true: {what}")
    pytest.skip(what)  # conftest turns this into a failure under CI too; explicit is clearer


def dev_requirements() -> list[str]:
    with open(os.path.join(ROOT, "requirements-dev.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return [line.split("=")[0].split("<")[0].split(">")[0].strip() for line in lines if line]


def test_compiled_extension_loaded():
    _require(sf.backends.available()["cpu"],
             f"cpu backend unavailable: {sf.backends.unavailable_reason('cpu')}")


def test_extension_belongs_to_the_imported_package():
    foreign = foreign_extension()
    _require(foreign is None, str(foreign))


def test_triton_runs_when_installed():
    if importlib.util.find_spec("triton") is None:
        _require(False, "triton not installed")
    _require(sf.backends.available()["triton"],
             f"triton backend unavailable: {sf.backends.unavailable_reason('triton')}")


@pytest.mark.parametrize("name", dev_requirements())
def test_dev_requirement_importable(name):
    module = IMPORT_NAMES.get(name.lower(), name.replace("-", "_"))
    _require(importlib.util.find_spec(module) is not None,
             f"{name} (requirements-dev.txt) not installed")


def test_ci_sets_the_flag():
    # The flag the conftest acts on: the CI=true that CI services and .ci/run set.
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert "export CI=true" in f.read()
