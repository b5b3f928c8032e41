"""stylize-fast export: write a model as ONNX or TorchScript."""

from __future__ import annotations

import argparse
import sys

HELP = "export a model to ONNX (standard ops, dynamic size) or TorchScript"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M", help="model file to export")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"),
                        help="output format")
    parser.add_argument("--output", required=True, metavar="FILE", help="file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip checking the ONNX file in onnxruntime against PyTorch")


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import os

    from .. import export as _export
    from ..models import load

    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"model file not found: {args.model}")
    folder = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(folder, exist_ok=True)
    model = load(args.model, map_location="cpu")
    if args.format == "onnx":
        if importlib.util.find_spec("onnx") is None:
            raise RuntimeError("ONNX export needs the onnx package: pip install onnx")
        _export.export_onnx(model, args.output, opset=args.opset)
        message = f"wrote {args.output} (ONNX opset {args.opset}, dynamic batch/height/width)"
        if not args.no_verify:
            if importlib.util.find_spec("onnxruntime") is None:
                message += "; not verified (pip install onnxruntime)"
            else:
                result = _export.verify_onnx(model, args.output)
                message += (f"; onnxruntime matches PyTorch (max abs diff "
                            f"{result['max_abs_diff']:.2g} on 0-255 outputs)")
    else:
        _export.export_torchscript(model, args.output)
        message = f"wrote {args.output} (TorchScript, traced)"
    print(message, file=sys.stderr)
    return 0
