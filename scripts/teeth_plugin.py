"""pytest plugin for scripts/check_test_teeth.py (loaded with ``-p teeth_plugin``).

While each test runs, a TorchDispatchMode watches the compiled and Triton custom ops of
stylize_fast (the kernels, below autograd: the backward ops are what autograd calls). Two modes,
chosen by TEETH_MODE:

* ``survey``: perturbs nothing; records, per test, which (op, backend, dtype, target) it
  exercised and whether it passed, as JSON in TEETH_OUT.
* ``perturb``: scales one output of one op by TEETH_FACTOR, only for the backend TEETH_BACKEND
  and inputs of dtype TEETH_DTYPE (target ``output``: the forward's output; ``grad_input``,
  ``grad_weight``, ``grad_bias``: the backward's); writes to TEETH_OUT how many calls were
  perturbed and the first failure (test, exception type, whether the plugin itself raised).

TEETH_SELECT names a file of test node ids: other collected tests are deselected.
"""

from __future__ import annotations

import json
import os
import traceback

import pytest
import torch
from torch._subclasses.fake_tensor import is_fake
from torch.utils._python_dispatch import TorchDispatchMode

# Op schema name -> (op, backend, kind). Only CPU tensors here: the compiled ops are the cpu
# backend (the same ops on CUDA tensors would be the cuda backend, not watched).
OPS = {
    "stylize_fast::instance_norm_fwd": ("instance_norm", "cpu", "fwd"),
    "stylize_fast::instance_norm_bwd": ("instance_norm", "cpu", "bwd"),
    "stylize_fast::padded_conv2d_fwd": ("padded_conv2d", "cpu", "fwd"),
    "stylize_fast::padded_conv2d_bwd": ("padded_conv2d", "cpu", "bwd"),
    "stylize_fast::instance_norm_fwd_triton": ("instance_norm", "triton", "fwd"),
    "stylize_fast::instance_norm_bwd_triton": ("instance_norm", "triton", "bwd"),
    "stylize_fast::padded_conv2d_fwd_triton": ("padded_conv2d", "triton", "fwd"),
    "stylize_fast::padded_conv2d_bwd_triton": ("padded_conv2d", "triton", "bwd"),
}
GRADS = ("grad_input", "grad_weight", "grad_bias")  # the backward ops' outputs, in order
TARGETS = ("output", *GRADS)
# Failures that are the suite's checks speaking (not a crash): assertions, gradcheck, opcheck.
CHECK_ERRORS = ("AssertionError", "GradcheckError", "OpCheckError", "Failed")


def calls_touched(func, args, out) -> list[tuple[str, str, str, str, int]]:
    """(op, backend, dtype, target, index in the op's outputs) for each output this call
    produced that the suite could check."""
    entry = OPS.get(func._schema.name)
    if entry is None:
        return []
    op, backend, kind = entry
    x = args[0] if kind == "fwd" else args[1]  # the op's input tensor (bwd: after grad_output)
    if not isinstance(x, torch.Tensor) or is_fake(x) or x.device.type != "cpu":
        return []
    dtype = str(x.dtype).removeprefix("torch.")
    if kind == "fwd":
        return [(op, backend, dtype, "output", 0)]
    # The bool[3] output_mask, wherever the schema puts it (padded_conv2d_bwd appends output and
    # activation after it); every gradient where a call gives none.
    mask = next((a for a in args if isinstance(a, (list, tuple)) and len(a) == 3
                 and all(isinstance(v, bool) for v in a)), [True] * 3)
    return [(op, backend, dtype, name, i) for i, name in enumerate(GRADS)
            if mask[i] and isinstance(out[i], torch.Tensor) and out[i].numel() > 0]


class Watch(TorchDispatchMode):
    def __init__(self, perturb: tuple[str, str, str, str] | None, factor: float) -> None:
        super().__init__()
        self.perturb = perturb
        self.factor = factor
        self.seen: set[tuple[str, str, str, str]] = set()
        self.perturbed = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for op, backend, dtype, target, index in calls_touched(func, args, out):
            self.seen.add((op, backend, dtype, target))
            if self.perturb == (op, backend, dtype, target):
                self.perturbed += 1
                if isinstance(out, torch.Tensor):
                    out = out * self.factor  # elementwise: keeps the output's layout
                else:
                    out = tuple(t * self.factor if i == index else t for i, t in enumerate(out))
        return out


class TeethPlugin:
    def __init__(self) -> None:
        self.mode = os.environ.get("TEETH_MODE", "survey")
        self.out_path = os.environ["TEETH_OUT"]
        self.factor = float(os.environ.get("TEETH_FACTOR", "1"))
        self.target = None
        if self.mode == "perturb":
            self.target = tuple(os.environ[f"TEETH_{k}"] for k in ("OP", "BACKEND", "DTYPE",
                                                                    "TARGET"))
        self.select = None
        if os.environ.get("TEETH_SELECT"):
            with open(os.environ["TEETH_SELECT"]) as f:
                self.select = {line.strip() for line in f if line.strip()}
        self.tests: dict[str, dict] = {}
        self.perturbed = 0
        self.first_failure: dict | None = None

    def pytest_collection_modifyitems(self, config, items):
        if self.select is None:
            return
        keep = [it for it in items if it.nodeid in self.select]
        config.hook.pytest_deselected(items=[it for it in items if it.nodeid not in self.select])
        items[:] = keep

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        watch = Watch(self.target, self.factor)
        self.tests[item.nodeid] = {"passed": True, "seen": []}
        with watch:
            yield
        self.perturbed += watch.perturbed
        self.tests[item.nodeid]["seen"] = sorted(watch.seen)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if not report.failed:
            return
        self.tests[item.nodeid]["passed"] = False
        if self.first_failure is None:
            exc = call.excinfo
            frames = traceback.extract_tb(exc.tb) if exc is not None else []
            self.first_failure = {
                "test": item.nodeid,
                "phase": report.when,
                "exception": exc.typename if exc is not None else "?",
                "check": exc is not None and exc.typename in CHECK_ERRORS,
                # raised inside this plugin's own code: a crash, not the suite catching it
                "plugin_crash": bool(frames) and frames[-1].filename == __file__,
                "message": str(exc.value).splitlines()[0][:300] if exc is not None
                and str(exc.value) else "",
            }

    def pytest_sessionfinish(self, session, exitstatus):
        with open(self.out_path, "w") as f:
            json.dump({"exitstatus": int(exitstatus), "perturbed_calls": self.perturbed,
                       "first_failure": self.first_failure, "tests": self.tests}, f)


def pytest_configure(config):
    if os.environ.get("TEETH_OUT"):
        config.pluginmanager.register(TeethPlugin(), "teeth")
