"""stylize-fast subcommands: each one listed, and one whose module cannot load says why."""

from __future__ import annotations

import importlib

import pytest

from stylize_fast import cli


def test_every_subcommand_is_listed(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert name in out
    assert "unavailable" not in out


def test_a_subcommand_that_cannot_load_says_why(monkeypatch, capsys):
    real = importlib.import_module

    def failing(name, *args):
        if name == "stylize_fast.commands.export":
            raise ImportError("No module named 'onnx'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", failing)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # help text is wrapped
    assert "export (unavailable: No module named 'onnx')" in out
    assert cli.main(["export", "--model", "m.pth", "--format", "onnx"]) == 1
    err = capsys.readouterr().err
    assert "stylize-fast export: error: the export command cannot load" in err
    assert "No module named 'onnx'" in err
