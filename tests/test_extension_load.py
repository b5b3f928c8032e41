"""An extension built against another torch (what an isolated `pip install .` can produce) is
reported once at import, naming both versions and the fix, rather than every op quietly running
the reference backend."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parents[1] / "stylize_fast"


def _import_copy(tmp_path: Path, build_torch: str) -> subprocess.CompletedProcess:
    copy = tmp_path / "stylize_fast"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    (copy / "_build_info.json").write_text(json.dumps({"torch": build_torch}))
    # An editable install of the package elsewhere resolves stylize_fast._C through its own
    # finder; drop it so that only the copy is seen.
    code = ("import sys, warnings; warnings.simplefilter('always')\n"
            "sys.meta_path[:] = [f for f in sys.meta_path\n"
            "                    if '__editable__' not in getattr(f, '__module__', '')]\n"
            "import stylize_fast as sf\n"
            "print('cpu available:', sf.backends.available()['cpu'])\n"
            "print('error:', sf._extension.load_error())")
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(tmp_path),
                                                       "PATH": "/usr/bin:/bin"})


def test_build_for_another_torch_warns_naming_both_versions(tmp_path):
    result = _import_copy(tmp_path, "1.0.0")
    assert result.returncode == 0, result.stderr
    assert "cpu available: False" in result.stdout
    assert "built against torch 1.0.0" in result.stderr
    assert f"torch {torch.__version__} is running" in result.stderr
    assert "--no-build-isolation" in result.stderr


def test_missing_build_of_this_torch_stays_quiet(tmp_path):
    result = _import_copy(tmp_path, torch.__version__)
    assert result.returncode == 0, result.stderr
    assert "cpu available: False" in result.stdout
    assert "built against" not in result.stderr
