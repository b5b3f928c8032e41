"""What a benchmark run measures: :class:`Case` (one op at one shape, dtype, layout and mode),
:class:`Provider` (one implementation of it), and the case lists: ``tiny`` (tests, seconds),
``quick`` (the default, under two minutes on 2 CPU cores) and ``full`` (``--full``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

OPS = ("instance_norm", "padded_conv2d", "generator", "train")
MODES = ("forward", "forward+backward", "inference")
LAYOUTS = ("contiguous", "channels_last")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


class Skip(Exception):
    """Raised while building a provider that cannot run here; the message says why."""


@dataclass(frozen=True)
class Case:
    """One measurement: ``op`` on an input of ``shape`` (N, C, H, W).

    params: op-specific settings as sorted (key, value) pairs, e.g. for ``padded_conv2d``
    ``(("kernel", 3), ("out", 128), ("padding_mode", "reflect"), ("stride", 1))``, for
    ``generator`` ``(("arch", "johnson"),)``.
    """

    op: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "contiguous"
    mode: str = "inference"
    params: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"Case: op must be one of {OPS}, got {self.op!r}")
        if self.mode not in MODES:
            raise ValueError(f"Case: mode must be one of {MODES}, got {self.mode!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"Case: layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"Case: dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if len(self.shape) != 4 or not all(isinstance(s, int) and s > 0 for s in self.shape):
            raise ValueError(f"Case: shape must be 4 positive ints (N, C, H, W), got {self.shape}")

    def param(self, key: str, default: object = None) -> object:
        return dict(self.params).get(key, default)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.layout == "channels_last" else torch.contiguous_format

    @property
    def shape_str(self) -> str:
        return "x".join(str(s) for s in self.shape)

    @property
    def params_str(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def to_json(self) -> dict:
        return {"op": self.op, "shape": list(self.shape), "dtype": self.dtype,
                "layout": self.layout, "mode": self.mode, "params": [list(p) for p in self.params]}

    @classmethod
    def from_json(cls, d: dict) -> Case:
        return cls(d["op"], tuple(d["shape"]), d["dtype"], d["layout"], d["mode"],
                   tuple((k, v) for k, v in d["params"]))


@dataclass
class Prepared:
    """A provider ready to time. ``step()`` runs one call on the next (rotated) input and returns
    its output; ``forward(i)``, when given, runs on input number ``i`` for quality checks;
    ``module`` is the eager model, when there is one, for the profile split."""

    step: Callable[[], object]
    forward: Callable[[int], object] | None = None
    module: torch.nn.Module | None = None  # eager model, for per-layer profile ranges
    # The step's own profile split (seconds per category), where the op defines one.
    split: Callable[[], dict[str, float]] | None = None


@dataclass
class Provider:
    """One implementation of a case.

    name:     label in tables, CSV and plot legends.
    backend:  what executes it: a stylize_fast backend ("cpu", "cuda", "triton", "reference"),
              "torch" (eager PyTorch), "inductor" (torch.compile), "onnxruntime", "openvino".
    build:    prepares model and inputs (may raise :class:`Skip`) and returns a :class:`Prepared`.
    baseline: the provider ratios are taken against (one per case).
    compiled: its first call includes compilation, reported as compile time.
    """

    name: str
    backend: str
    build: Callable[[], Prepared]
    baseline: bool = False
    is_copy: bool = False
    compiled: bool = False


def _params(**kw: object) -> tuple[tuple[str, object], ...]:
    return tuple(sorted(kw.items()))


def conv_params(out: int, kernel: int, stride: int = 1, padding_mode: str = "reflect",
                upsample: int = 1):
    """Params of a padded-conv case; ``upsample`` > 1 (nearest, before the padding) only
    appears when set, so the other cases keep their ids."""
    extra = {"upsample": upsample} if upsample != 1 else {}
    return _params(out=out, kernel=kernel, stride=stride, padding_mode=padding_mode, **extra)


# Johnson et al.'s generator at an H x W input: the instance-norm inputs (N, C, h, w) of its
# three widths, and its reflection-padded convolutions (input shape, out channels, kernel, stride).
def johnson_norm_shapes(n: int, size: int) -> list[tuple[int, int, int, int]]:
    return [(n, 32, size, size), (n, 64, size // 2, size // 2), (n, 128, size // 4, size // 4)]


def johnson_convs(n: int, size: int) -> list[tuple[tuple[int, int, int, int], int, int, int]]:
    q, h = size // 4, size // 2
    return [((n, 3, size, size), 32, 9, 1), ((n, 32, size, size), 64, 3, 2),
            ((n, 64, h, h), 128, 3, 2), ((n, 128, q, q), 128, 3, 1),
            ((n, 64, size, size), 32, 3, 1), ((n, 32, size, size), 3, 9, 1)]


def _norm_cases(shapes, dtypes, layouts, modes) -> list[Case]:
    return [Case("instance_norm", s, d, lay, m)
            for d in dtypes for lay in layouts for m in modes for s in shapes]


def _conv_cases(convs, dtypes, layouts, modes) -> list[Case]:
    return [Case("padded_conv2d", s, d, lay, m, conv_params(co, k, st))
            for d in dtypes for lay in layouts for m in modes for (s, co, k, st) in convs]


def _generator_cases(archs, sizes, batches, dtypes) -> list[Case]:
    # Most telling first (512x512, batch 1), so a run cut short by --time-limit has it.
    order = sorted(((b, s) for b in batches for s in sizes), key=lambda bs: (bs[0], bs[1] != 512))
    return [Case("generator", (b, 3, s, s), d, "contiguous", "inference", _params(arch=a))
            for b, s in order for a in archs for d in dtypes]


def tiny() -> list[Case]:
    """Seconds: for tests of the machinery, not for numbers."""
    return (_norm_cases([(1, 8, 16, 16), (2, 8, 24, 24)], ["float32"], ["contiguous"],
                        ["inference", "forward+backward"])
            + _conv_cases([((1, 4, 16, 16), 4, 3, 1)], ["float32"], ["contiguous"], ["inference"]))


def _round_robin(*lists: list[Case]) -> list[Case]:
    """One case of each list in turn, so a run cut short by its time limit has every op."""
    out: list[Case] = []
    for i in range(max(map(len, lists))):
        out += [cases[i] for cases in lists if i < len(cases)]
    return out


def _train_cases(shapes, dtypes, archs=("johnson",)) -> list[Case]:
    """One training step (generator + the examples' VGG-16 loss + Adam) per batch shape."""
    return [Case("train", shape, d, "contiguous", "forward+backward", _params(arch=arch))
            for arch in archs for shape in shapes for d in dtypes]


def quick() -> list[Case]:
    """The default run: the Johnson net's norm and conv shapes at 256x256, one generator case;
    ops in turn (see :func:`_round_robin`)."""
    norms = johnson_norm_shapes(1, 256)
    return _round_robin(
        _norm_cases(norms, ["float32"], ["contiguous"], ["inference"])
        + _norm_cases(norms[:1], ["float32"], ["contiguous"], ["forward", "forward+backward"])
        + _norm_cases(norms[:1], ["float32"], ["channels_last"], ["inference"]),
        _conv_cases([((1, 3, 256, 256), 32, 9, 1), ((1, 128, 64, 64), 128, 3, 1)],
                    ["float32"], ["contiguous"], ["inference"]),
        _generator_cases(["johnson"], [256], [1], ["float32"]),
        _train_cases([(1, 3, 128, 128)], ["float32"]))


def full() -> list[Case]:
    """Everything: every provider x mode x layout x dtype at the Johnson net's shapes for
    256x256 and 512x512 images (and batch 4 at 256x256), both generators at 256, 512, 1024
    and batch 1, 4 in float32 and bfloat16."""
    norms = johnson_norm_shapes(1, 256) + johnson_norm_shapes(1, 512) + [(4, 32, 256, 256)]
    convs = johnson_convs(1, 256) + johnson_convs(1, 512)[:2]
    return (_norm_cases(norms, ["float32", "bfloat16"], list(LAYOUTS), list(MODES))
            + _conv_cases(convs, ["float32", "bfloat16"], list(LAYOUTS),
                          ["inference", "forward+backward"])
            + _generator_cases(["johnson", "texture"], [256, 512, 1024], [1, 4],
                               ["float32", "bfloat16"])
            + _train_cases([(4, 3, 256, 256)], ["float32", "bfloat16"], ("johnson", "texture")))


SUITES: dict[str, Callable[[], list[Case]]] = {"tiny": tiny, "quick": quick, "full": full}


def select(cases: Iterable[Case], *, ops: Iterable[str] | None = None,
           dtypes: Iterable[str] | None = None, modes: Iterable[str] | None = None,
           layouts: Iterable[str] | None = None) -> list[Case]:
    """Filter a case list (None keeps all)."""
    keep = [c for c in cases if (ops is None or c.op in set(ops))
            and (dtypes is None or c.dtype in set(dtypes))
            and (modes is None or c.mode in set(modes))
            and (layouts is None or c.layout in set(layouts))]
    return keep
