"""Export: ONNX with standard ops and dynamic size, checked in onnxruntime; TorchScript."""

import pytest
import torch

from stylize_fast import export
from stylize_fast.cli import main
from stylize_fast.models import JohnsonNet, TextureNet, save
from stylize_fast.testing import assert_close

pytestmark = pytest.mark.filterwarnings("ignore:.*PaddedConv2d is not available",
                                        "ignore::torch.jit.TracerWarning",
                                        "ignore::UserWarning:torch.onnx.*",
                                        "ignore::DeprecationWarning")


def models():
    torch.manual_seed(3)
    return {"johnson": JohnsonNet("fused", channels=4, num_residual=1),
            "texture": TextureNet("fused", branch_channels=3)}


@pytest.mark.parametrize("arch", ["johnson", "texture"])
def test_onnx_round_trip(tmp_path, arch):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = models()[arch].eval()
    path = export.export_onnx(model, tmp_path / "m.onnx")
    graph = onnx.load(path).graph
    domains = {node.domain for node in graph.node}
    assert domains <= {"", "ai.onnx"}, domains  # standard operators only
    assert "InstanceNormalization" in {node.op_type for node in graph.node}
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 36, 44), (2, 3, 68, 40)]:  # dynamic batch, height and width
        x = torch.rand(*shape) * 255
        (actual,) = session.run(["output"], {"input": x.numpy()})
        with torch.no_grad():
            expected = model(x)
        scale = max(expected.abs().max().item(), 1.0)
        assert_close(torch.from_numpy(actual), expected, atol=2e-4 * scale, rtol=1e-3)
    assert export.verify_onnx(model, path)["max_abs_diff"] < 1e-2


@pytest.mark.parametrize("arch", ["johnson", "texture"])
def test_torchscript_round_trip(tmp_path, arch):
    model = models()[arch].eval()
    path = export.export_torchscript(model, tmp_path / "m.pt")
    loaded = torch.jit.load(path)
    for shape in [(1, 3, 36, 44), (2, 3, 68, 40)]:
        x = torch.rand(*shape) * 255
        with torch.no_grad():
            expected = model(x)
            actual = loaded(x)
        scale = max(expected.abs().max().item(), 1.0)
        assert_close(actual, expected, atol=2e-4 * scale, rtol=1e-3)
    assert "stylize_fast::" not in str(loaded.inlined_graph)  # no custom ops inside


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export.export(models()["johnson"], tmp_path / "m.x", "tflite")


def test_export_cli(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = models()["johnson"].eval()
    save(model, tmp_path / "m.pth")
    for opset in (None, 18):  # the default (17) and an explicit --opset
        out = tmp_path / "out" / f"m{opset}.onnx"
        rc = main(["export", "--model", str(tmp_path / "m.pth"), "--format", "onnx",
                   "--output", str(out)] + (["--opset", str(opset)] if opset else []))
        assert rc == 0 and out.stat().st_size > 0
        assert "onnxruntime matches PyTorch" in capsys.readouterr().err
        versions = {o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")}
        assert versions == {opset or 17}
    rc = main(["export", "--model", str(tmp_path / "m.pth"), "--format", "onnx", "--no-verify",
               "--output", str(tmp_path / "nv.onnx")])
    assert rc == 0 and "matches" not in capsys.readouterr().err
    rc = main(["export", "--model", str(tmp_path / "m.pth"), "--format", "torchscript",
               "--output", str(tmp_path / "m.pt")])
    assert rc == 0
    x = torch.rand(1, 3, 36, 44) * 255
    with torch.no_grad():
        assert_close(torch.jit.load(str(tmp_path / "m.pt"))(x), model(x), atol=1e-2, rtol=1e-4)
    rc = main(["export", "--model", str(tmp_path / "missing.pth"), "--format", "onnx",
               "--output", str(tmp_path / "x.onnx")])
    assert rc == 1 and "model file not found" in capsys.readouterr().err
