"""Instance norm + ReLU: ours per backend vs InstanceNorm2d+ReLU, group_norm, BatchNorm2d,
torch.compile, and a same-size copy; three modes and both layouts, at small sizes."""

import pytest
from conftest import case_params, run_benchmark

from stylize_fast.bench.suite import Case

CASES = [Case("instance_norm", (1, 32, 128, 128), "float32", layout, mode)
         for layout in ("contiguous", "channels_last")
         for mode in ("inference", "forward", "forward+backward")]


@pytest.mark.parametrize(("case", "provider"), case_params(CASES))
def test_instance_norm(benchmark, case, provider):
    run_benchmark(benchmark, case, provider)
