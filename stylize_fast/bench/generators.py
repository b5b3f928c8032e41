"""Generator providers (JohnsonNet, TextureNet): the fused model against the plain-PyTorch
``norm="instance"`` model, that model under torch.compile with freezing, and the exported ONNX
model in onnxruntime and OpenVINO (when installed); plus the profile split of a forward into
conv / norm / pad / other from torch.profiler op names."""

from __future__ import annotations

import functools
import math
import os
import tempfile

import torch
from torch import nn

from .. import config
from .suite import Case, Prepared, Provider, Skip
from .timing import Rotating

OP = "generator"
BASELINE = "instance"
BASELINE_FP32 = "instance float32"
PROFILE_CATEGORIES = ("conv", "norm", "pad", "other")


def _model_class(arch: str):
    try:
        from .. import models
    except ImportError as exc:
        raise Skip(f"stylize_fast.models is not available yet ({exc})") from None
    names = {"johnson": "JohnsonNet", "texture": "TextureNet"}
    if arch not in names:
        raise ValueError(f"generator case: arch must be one of {sorted(names)}, got {arch!r}")
    cls = getattr(models, names[arch], None)
    if cls is None:
        raise Skip(f"stylize_fast.models.{names[arch]} is not available yet")
    return cls


@functools.lru_cache(maxsize=8)
def _state_dict(arch: str) -> dict[str, torch.Tensor]:
    # One set of random weights per architecture, shared by every provider. Johnson's last
    # layer is rescaled so that the output spans the pixel range (0-255) as a trained model's
    # does: the half-precision PSNR is then measured against the range that images have.
    torch.manual_seed(0)
    model = _model_class(arch)(norm="instance").eval()
    if arch == "johnson":
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            y = model(torch.rand(1, 3, 64, 64, generator=gen) * 255)
            scale = 255.0 / (y.max() - y.min()).item()
            last = model.deconv3.conv2d
            last.weight.mul_(scale)
            last.bias.mul_(scale).add_(-y.min().item() * scale)
    return model.state_dict()


def make_model(arch: str, norm: str, device: str, dtype: torch.dtype) -> nn.Module:
    """The generator with the shared weights, in eval mode, on ``device`` in ``dtype``."""
    model = _model_class(arch)(norm=norm)
    model.load_state_dict(_state_dict(arch))
    return model.eval().to(device=device, dtype=dtype)


def _images(case: Case, device: str, dtype: torch.dtype, count: int) -> list[torch.Tensor]:
    """Uniform random images (0-255 for Johnson's 0-255 convention, else 0-1)."""
    scale = 255.0 if case.param("arch") == "johnson" else 1.0
    gen = torch.Generator().manual_seed(0)
    return [(torch.rand(case.shape, generator=gen) * scale).to(device=device, dtype=dtype)
            .contiguous(memory_format=case.memory_format) for _ in range(count)]


def _input_count(case: Case, device: str) -> int:
    from . import machine
    from .timing import rotation_count

    return rotation_count(case.numel * 4, machine.cache_bytes(device), limit=8)


def _torch_provider(case: Case, device: str, name: str, backend: str, norm: str, *,
                    dtype: torch.dtype | None = None, compile: bool = False,
                    baseline: bool = False, per_layer_norm: bool = False) -> Provider:
    def build() -> Prepared:
        dt = dtype or case.torch_dtype
        model = make_model(str(case.param("arch")), norm, device, dt)
        if case.layout == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        run = model
        extra = None
        if compile:
            import torch._inductor.config as inductor_config

            run = torch.compile(model, dynamic=False)
            # Freezing folds weights into constants; it needs no_grad, set at every call
            # because compilation happens lazily at the first one.
            extra = lambda: inductor_config.patch(freezing=True)
        images = _images(case, device, dt, _input_count(case, device))
        rot = Rotating(images)

        def call(x):
            with torch.no_grad():
                if per_layer_norm:  # the fused layers one by one, no normalize-on-load
                    with config.override(no_norm_on_load=True):
                        return run(x)
                if extra is None:
                    return run(x)
                with extra():
                    return run(x)

        return Prepared(lambda: call(rot.next()), forward=lambda i: call(images[i]),
                        module=None if compile else model)

    return Provider(name, backend, build, baseline=baseline, compiled=compile)


def _fused_backend(device: str) -> str:
    """The instance-norm backend that automatic selection picks for ``device`` tensors."""
    from .. import backends

    try:
        return backends.select("instance_norm", torch.empty(1, 1, 1, 1, device=device))[0]
    except Exception:
        return "auto"


@functools.lru_cache(maxsize=4)
def export_onnx(arch: str) -> str:
    """Export the plain float32 model to ONNX (dynamic batch, height, width); returns the path.
    The fused model's custom ops are not exported: ONNX runtimes fuse on their own."""
    model = make_model(arch, "instance", "cpu", torch.float32)
    path = os.path.join(tempfile.mkdtemp(prefix="sf-bench-"), f"{arch}.onnx")
    x = torch.rand(1, 3, 64, 64)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "n", 2: "h", 3: "w"},
                                        "output": {0: "n", 2: "h", 3: "w"}})
    return path


def _numpy_images(case: Case, device: str) -> list:
    return [x.numpy() for x in _images(case, "cpu", torch.float32, _input_count(case, device))]


def _onnxruntime_provider(case: Case, device: str) -> Provider:
    def build() -> Prepared:
        if device != "cpu":
            raise Skip("onnxruntime provider runs on CPU only")
        if case.dtype != "float32":
            raise Skip("onnxruntime's CPU provider has no bfloat16 convolution")
        try:
            import onnxruntime as ort
        except ImportError:
            raise Skip("onnxruntime is not installed (pip install onnxruntime)") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Its worker threads otherwise spin for a while after each run, on the cores the next
        # provider of the interleaved round runs on (measured: the fused JohnsonNet timed right
        # after onnxruntime ran 1.8x slower at 256x256).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        sess = ort.InferenceSession(export_onnx(str(case.param("arch"))), opts,
                                    providers=["CPUExecutionProvider"])
        images = _numpy_images(case, device)
        rot = Rotating(images)
        call = lambda x: torch.from_numpy(sess.run(None, {"input": x})[0])
        return Prepared(lambda: call(rot.next()), forward=lambda i: call(images[i]))

    return Provider("onnxruntime", "onnxruntime", build)


def _openvino_provider(case: Case, device: str) -> Provider:
    def build() -> Prepared:
        if device != "cpu":
            raise Skip("OpenVINO provider runs on CPU only")
        try:
            import openvino as ov
        except ImportError:
            raise Skip("openvino is not installed (pip install openvino)") from None
        precision = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(case.dtype)
        if precision is None:
            raise Skip(f"no OpenVINO precision for {case.dtype}")
        core = ov.Core()
        model = core.read_model(export_onnx(str(case.param("arch"))))
        compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": str(torch.get_num_threads())})
        request = compiled.create_infer_request()
        images = _numpy_images(case, device)
        rot = Rotating(images)

        def call(x):
            request.infer({0: x})
            return torch.from_numpy(request.get_output_tensor(0).data.copy())

        return Prepared(lambda: call(rot.next()), forward=lambda i: call(images[i]))

    name = "openvino" if case.dtype == "float32" else f"openvino {case.dtype}"
    return Provider(name, "openvino", build)


def providers(case: Case, device: str, *, compile: bool = False) -> list[Provider]:
    """Generator providers for ``case`` (input (N, 3, H, W), mode inference)."""
    if case.mode != "inference":
        raise ValueError("generator cases are inference-only")
    half = case.dtype != "float32"
    out = [_torch_provider(case, device, "fused", _fused_backend(device), "fused"),
           _torch_provider(case, device, "fused per-layer norm", _fused_backend(device), "fused",
                           per_layer_norm=True),
           _torch_provider(case, device, BASELINE, "torch", "instance", baseline=not half)]
    if half:
        # Ratios of a half-precision model are taken against the eager float32 model: the
        # speed a user gains by switching, measured in the same run.
        out.append(_torch_provider(case, device, BASELINE_FP32, "torch", "instance",
                                   dtype=torch.float32, baseline=True))
    if compile:
        out.append(_torch_provider(case, device, "instance compiled+freezing", "inductor",
                                   "instance", compile=True))
    out += [_onnxruntime_provider(case, device), _openvino_provider(case, device)]
    return out


def traffic_bytes(case: Case) -> int | None:
    return None


def flop_count(case: Case) -> int | None:
    return None


def psnr(output: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR (dB) of ``output`` against ``reference``, peak = the reference's value range."""
    out, ref = output.detach().double().cpu(), reference.detach().double().cpu()
    if out.shape != ref.shape:
        return float("nan")
    mse = torch.mean((out - ref) ** 2).item()
    peak = (ref.max() - ref.min()).item()
    if mse == 0:
        return float("inf")
    return 10 * math.log10(peak * peak / mse) if peak > 0 else float("nan")


def classify(name: str) -> str | None:
    """Profile category of an op or kernel name, or None if it names none."""
    n = name.lower()
    if "conv" in n:  # aten::convolution, mkldnn::_convolution_pointwise, padded_conv2d
        return "conv"
    if "norm" in n:  # instance_norm, native_batch_norm, group_norm, our instance_norm_fwd
        return "norm"
    if "pad" in n:  # reflection_pad2d, replication_pad2d, constant_pad_nd
        return "pad"
    return None


class _LeafRanges:
    """Profiler ranges named after each leaf module's class (``Conv2d``, ``ReflectionPad2d``,
    ``FusedInstanceNorm2d``, ...), so ops of a Python-level implementation are attributed to
    the layer that ran them. Removed on exit."""

    def __init__(self, model: nn.Module | None) -> None:
        self.model = model
        self.handles: list = []

    def __enter__(self):
        # A model on the normalize-on-load schedule calls no leaf layers (and hooks would switch
        # it to the per-layer schedule): its ops name themselves.
        if self.model is None or getattr(self.model, "norm_on_load", lambda: False)():
            return self
        for m in self.model.modules():
            if next(m.children(), None) is not None:
                continue
            name = type(m).__name__

            def pre(mod, args, name=name):
                rf = torch.profiler.record_function(name)
                rf.__enter__()
                mod._sf_bench_range = rf

            def post(mod, args, output):
                rf = mod.__dict__.pop("_sf_bench_range", None)
                if rf is not None:
                    rf.__exit__(None, None, None)

            self.handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


def profile_split(step, device: str, calls: int = 1,
                  module: nn.Module | None = None) -> dict[str, float]:
    """Seconds per call spent in conv / norm / pad / other during ``step()``.

    Each op's self time goes to the category of its outermost ancestor that names one (so the
    copies inside ``aten::instance_norm`` count as norm; with ``module``, every leaf layer is
    a named range), else to "other" (upsampling, adds, activations, and the fused kernels of
    torch.compile, which the profiler sees as one graph call). On CUDA the split is over
    kernel self times by kernel name.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    cuda = device.startswith("cuda")
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    # step() has been warmed up by the timing already.
    with _LeafRanges(module), profile(activities=activities) as prof:
        for _ in range(calls):
            step()
        if cuda:
            torch.cuda.synchronize()
    split = dict.fromkeys(PROFILE_CATEGORIES, 0.0)
    for evt in prof.events():
        if cuda:
            t = getattr(evt, "self_device_time_total", 0.0)
            if t <= 0:
                continue
            cat = classify(evt.name)
        else:
            t = evt.self_cpu_time_total
            cat, node = None, evt
            while node is not None:
                cat = classify(node.name) or cat
                node = node.cpu_parent
        split[cat or "other"] += t * 1e-6 / calls
    return split
