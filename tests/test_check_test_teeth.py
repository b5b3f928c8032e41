"""scripts/check_test_teeth.py on one small test: a 1% wrong gradient of the compiled
instance norm is caught, an unperturbed one (factor 1) is reported as survived."""

import os
import subprocess
import sys

import pytest

import stylize_fast as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST = "tests/test_autograd_cpp.py::test_instance_norm_gradients_reach_the_right_tensor"


@pytest.mark.skipif(not sf.backends.available()["cpu"], reason="C++ extension not built")
def test_perturbed_gradient_caught_and_unperturbed_survives(tmp_path):
    def check(rel: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, os.path.join(ROOT, "scripts", "check_test_teeth.py"),
               "--ops", "instance_norm", "--backends", "cpu", "--dtypes", "float64",
               "--targets", "grad_weight", "--rel-float32", rel, "--files", TEST,
               "--survey", str(tmp_path / "survey.json")]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)

    caught = check("0.01")
    assert caught.returncode == 0, caught.stdout + caught.stderr
    row = next(line for line in caught.stdout.splitlines() if "| grad_weight |" in line)
    assert "| caught |" in row and "AssertionError" in row
    assert "1 of 1 perturbations caught" in caught.stdout

    survived = check("0")  # the survey is reused: only the perturbed run
    assert survived.returncode == 1, survived.stdout + survived.stderr
    assert "| survived |" in survived.stdout and "all tests passed" in survived.stdout
