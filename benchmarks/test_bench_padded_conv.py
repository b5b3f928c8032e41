"""Padded convolution: ours vs F.pad + conv2d vs nn.Conv2d(padding_mode) vs torch.compile."""

import pytest
from conftest import case_params, run_benchmark

from stylize_fast.bench.suite import Case, conv_params

CASES = [Case("padded_conv2d", shape, "float32", "contiguous", mode, conv_params(out, k))
         for shape, out, k in (((1, 3, 128, 128), 32, 9), ((1, 64, 64, 64), 64, 3))
         for mode in ("inference", "forward+backward")]


@pytest.mark.parametrize(("case", "provider"), case_params(CASES))
def test_padded_conv(benchmark, case, provider):
    run_benchmark(benchmark, case, provider)
