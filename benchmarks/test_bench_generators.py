"""Generators: fused vs plain (norm="instance") vs torch.compile + freezing vs ONNX Runtime and
OpenVINO (when installed), float32 and bfloat16, at 128x128."""

import pytest
from conftest import case_params, run_benchmark

from stylize_fast.bench.suite import Case

CASES = [Case("generator", (1, 3, 128, 128), dtype, "contiguous", "inference",
              (("arch", arch),))
         for arch in ("johnson", "texture") for dtype in ("float32", "bfloat16")]


@pytest.mark.parametrize(("case", "provider"), case_params(CASES))
def test_generator(benchmark, case, provider):
    run_benchmark(benchmark, case, provider)
