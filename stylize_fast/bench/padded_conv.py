"""Padded convolution providers: ours (padding inside the kernel) against building the padded
tensor (``F.pad`` + ``F.conv2d``), ``nn.Conv2d(padding_mode=...)`` and torch.compile. Cases
with an ``upsample`` param are nearest upsampling + padded conv layers: ours is one
``PaddedConv2d(upsample=...)``, the others run ``nn.Upsample`` first."""

from __future__ import annotations

from torch import nn

from .common import compiled, copy_provider, module_step, sf_backends, skipped
from .suite import Case, Prepared, Provider, Skip

OP = "padded_conv2d"
BASELINE = "F.pad+conv2d"

_PAD_MODULES = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d,
                "zeros": nn.ZeroPad2d}


def _geometry(case: Case) -> tuple[int, int, int, int, int, str]:
    cin = case.shape[1]
    out, k = int(case.param("out")), int(case.param("kernel"))
    stride, mode = int(case.param("stride", 1)), str(case.param("padding_mode", "reflect"))
    return cin, out, k, stride, k // 2, mode


def _upsample(case: Case) -> int:
    return int(case.param("upsample", 1))


def _upsampled(up: int, module: nn.Module) -> nn.Module:
    return module if up == 1 else nn.Sequential(nn.Upsample(scale_factor=up, mode="nearest"),
                                                module)


def _conv_init(m: nn.Module, seed: int = 2) -> nn.Module:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return m


def _provider(case, device, name, backend, factory, *, sf_backend=None, compile=False,
              baseline=False) -> Provider:
    def build() -> Prepared:
        m = _conv_init(factory()).to(device=device, dtype=case.torch_dtype,
                                     memory_format=case.memory_format)
        if compile:
            m = compiled(m)
        return module_step(case, m, device, backend=sf_backend)

    return Provider(name, backend, build, baseline=baseline, compiled=compile)


def providers(case: Case, device: str, *, compile: bool = False) -> list[Provider]:
    """Every padded-conv provider for ``case`` (input (N, Cin, H, W); params out, kernel,
    stride, padding_mode; padding kernel // 2 as in the Johnson net)."""
    cin, cout, k, stride, pad, mode = _geometry(case)
    up = _upsample(case)
    out: list[Provider] = []
    for backend, reason in sf_backends(OP, device):
        name = f"sf-{backend}"
        if reason:
            out.append(skipped(name, backend, reason))
            continue

        def factory():
            try:
                from ..nn import PaddedConv2d
            except ImportError:
                raise Skip("stylize_fast.PaddedConv2d is not available yet") from None
            return PaddedConv2d(cin, cout, k, stride, pad, padding_mode=mode, upsample=up)

        out.append(_provider(case, device, name, backend, factory, sf_backend=backend))
    if not sf_backends(OP, device):
        out.append(skipped("sf", "-", "no backend implements padded_conv2d yet"))
    explicit = lambda: _upsampled(up, nn.Sequential(_PAD_MODULES[mode](pad),
                                                    nn.Conv2d(cin, cout, k, stride)))
    out.append(_provider(case, device, BASELINE, "torch", explicit, baseline=True))
    out.append(_provider(case, device, "Conv2d(padding_mode)", "torch",
                         lambda: _upsampled(up, nn.Conv2d(cin, cout, k, stride, pad,
                                                          padding_mode=mode))))
    if compile:
        out.append(_provider(case, device, f"compiled {BASELINE}", "inductor", explicit,
                             compile=True))
    out.append(copy_provider(case, device))
    return out


def _out_hw(case: Case) -> tuple[int, int]:
    _, _, k, stride, pad, _ = _geometry(case)
    h, w = (s * _upsample(case) for s in case.shape[2:])
    return (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1


def traffic_bytes(case: Case) -> int:
    """Input read once, output written once, weights read once (forward); three times that
    for forward+backward (dx, dw)."""
    cin, cout, k, *_ = _geometry(case)
    ho, wo = _out_hw(case)
    n = case.shape[0]
    elems = case.numel + n * cout * ho * wo + cout * cin * k * k
    return elems * case.torch_dtype.itemsize * (3 if case.mode == "forward+backward" else 1)


def flop_count(case: Case) -> int:
    """2 * N * Cout * Hout * Wout * Cin * k * k (forward); x3 with backward (dx and dw)."""
    cin, cout, k, *_ = _geometry(case)
    ho, wo = _out_hw(case)
    fwd = 2 * case.shape[0] * cout * ho * wo * cin * k * k
    return fwd * (3 if case.mode == "forward+backward" else 1)


def note(case: Case, device: str) -> str:
    """What our CPU kernel runs for this layer (``stylize_fast.ops.padded_conv.cpu_algorithm``):
    the forward's algorithm, and for forward+backward also the input and weight gradients'."""
    if device != "cpu":
        return ""
    import torch

    from ..ops import padded_conv as ops
    from ..ops.common import padding_mode_code

    cin, cout, k, stride, pad, mode = _geometry(case)
    x = torch.empty(case.shape, dtype=case.torch_dtype).contiguous(memory_format=case.memory_format)
    w = torch.empty(cout, cin, k, k, dtype=case.torch_dtype)
    args = (x, w, (stride, stride), (pad, pad), int(padding_mode_code(mode)))
    up = _upsample(case)
    text = ops.cpu_algorithm(*args, upsample=up)
    if case.mode == "forward+backward":
        text += (f"; input grad {ops.cpu_algorithm(*args, input_grad=True, upsample=up)}"
                 f", weight grad {ops.cpu_algorithm(*args, weight_grad=True, upsample=up)}")
    if up != 1:
        text += f" (upsample x{up}{' folded' if text.startswith('winograd') else ' first'})"
    return text
