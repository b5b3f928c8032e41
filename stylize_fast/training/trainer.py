"""The training loop behind ``stylize-fast train``: checkpoints, exact resume, AMP, DDP.

Exact resume: the data order is a pure function of (seed, iteration) (data.ResumableBatchSampler),
and a checkpoint holds the model, optimizer, scheduler, grad scaler, every RNG state (torch, CUDA,
python, numpy, data-loader generator), the iteration and the run's configuration. A run stopped
after iteration k and resumed with the same arguments performs bitwise the same updates as an
uninterrupted one (tests/test_trainer.py checks torch.equal on every parameter).

Checkpoints are written atomically (temp file in the same folder, fsync, os.replace) and read
with ``torch.load(weights_only=True)``: they hold only tensors, dicts, lists, numbers, strings.

Data never stalls the step unseen: each iteration times its wait in ``next(loader)`` (and the
copy to the device); the progress bar shows the smoothed fraction of step time spent waiting
(``data=3%``), and every log / history entry holds ``data_seconds`` and ``data_fraction`` (over
the iterations since the previous log line). A data set that fits ``train_cache_mb``
(``STYLIZE_FAST_TRAIN_CACHE_MB``, 1024 by default) is decoded once, before the workers start.

``temporal_weight > 0`` (``--temporal-weight``) adds the temporal term of ``temporal.py``: each
batch ``x`` gets synthetic next frames ``x'`` (known motion, drawn from (seed, iteration, global
position), so resume and DDP stay exact), the generator runs once on ``[x, x']``, the perceptual
loss judges ``g(x)`` and the temporal loss compares ``g(x')`` with ``g(x)`` warped. With 0 the
step is exactly the plain one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .._atomic import atomic_torch_save
from . import distributed as ddp
from .data import ContentImages, DecodedImages, ResumableBatchSampler, find_images, load_style
from .loop import LoopSchedule, run_loop, say, wait_summary
from .losses import LossConfig, PerceptualLoss, loss_config, parse_layers
from .styles import (
    ARCH_NAMES,
    draw_style_indices,
    extend_model,
    style_names,
    style_thumbnails,
    thumbnail,
    train_only_new_rows,
)
from .temporal import random_motion, sample_seeds, temporal_loss

CHECKPOINT_NAME = "checkpoint.pth"
FINAL_NAME = "model.pth"
CHECKPOINT_FORMAT = "stylize_fast.training_checkpoint"
CHECKPOINT_VERSION = 1

ARCHS = ("johnson", "texture")
NORMS = ("batch", "instance", "fused")
SCHEDULES = ("constant", "cosine", "step")

DEFAULT_CACHE_MB = 1024  # train_cache_mb when unset

# Fields that define the sequence of updates: a resumed run must agree on all of them.
_RUN_DEFINING = ("arch", "norm", "iterations", "batch_size", "image_size", "style_size", "seed",
                 "preset", "lr", "lr_schedule", "content_weight", "style_weight", "tv_weight",
                 "content_layers", "style_layers", "amp", "channels_last", "vgg_weights",
                 "temporal_weight")
_RUN_DEFAULTS = {"temporal_weight": 0.0}  # their values in checkpoints that predate them


@dataclass
class TrainConfig:
    """Everything a training run depends on (the ``stylize-fast train`` flags).

    ``style``: one style image, or a list of them for one multi-style (conditional instance
    norm) model whose every batch draws a style per sample. ``add_style`` + ``model``: train a
    copy of the trained model ``model`` with one more style, ``add_style``, updating only that
    style's (gamma, beta) rows (``style`` is then None; ``arch`` / ``norm`` come from the file).
    """

    style: str | list[str] | None
    data: str
    output: str
    arch: str = "johnson"
    norm: str = "fused"
    iterations: int = 40000
    batch_size: int = 4
    image_size: int = 256
    style_size: int | None = None  # None: same as image_size
    vgg_weights: str | None = None  # file, "random", or None (hub cache / download)
    checkpoint_every: int = 1000
    resume: bool = False
    seed: int = 42
    preset: str = "examples"
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    content_weight: float | None = None
    style_weight: float | None = None
    tv_weight: float | None = None
    content_layers: list[str] | None = None
    style_layers: list[str] | None = None
    workers: int | None = None  # None: default_workers()
    amp: str | None = None  # None, "auto" (see resolve_amp), "bfloat16", "float16"
    channels_last: bool | None = None  # None: on for norm="fused" (default_channels_last)
    sample_every: int = 500
    log_every: int = 50
    device: str | None = None
    progress: bool = True
    stop_at: int | None = None  # stop (with a checkpoint) after this iteration, as if killed
    add_style: str | None = None  # a style image to add to the trained model `model`
    model: str | None = None  # the model file --add-style extends
    temporal_weight: float = 0.0  # --temporal-weight: synthetic-motion temporal loss (temporal.py)

    def __post_init__(self) -> None:
        if isinstance(self.style, (list, tuple)):
            self.style = [os.fspath(p) for p in self.style]
            if len(self.style) == 1:
                self.style = self.style[0]
        elif self.style is not None:
            self.style = os.fspath(self.style)
        if self.add_style is not None:
            if self.model is None:
                raise ValueError("--add-style needs --model M: the trained model to extend")
            if self.style:
                raise ValueError("--add-style trains one new style on top of --model; do not "
                                 "pass --style as well")
        elif self.model is not None:
            raise ValueError("--model is the model that --add-style extends; pass --add-style "
                             "IMAGE too")
        elif not self.style:
            raise ValueError("--style: give one style image, several for a multi-style model, "
                             "or --add-style IMAGE --model M")
        if self.arch not in ARCHS:
            raise ValueError(f"--arch must be one of {ARCHS}, got {self.arch!r}")
        if self.norm not in NORMS:
            raise ValueError(f"--norm must be one of {NORMS}, got {self.norm!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"--lr-schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        for name in ("iterations", "batch_size", "image_size", "checkpoint_every", "sample_every",
                     "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, "
                                 f"got {value!r}")
        if self.workers is None:
            self.workers = default_workers()
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"--workers must be an integer >= 0, got {self.workers!r}")
        if self.channels_last not in (None, True, False):
            raise ValueError(f"channels_last must be None, True or False, got {self.channels_last!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr!r}")
        if self.amp not in (None, "auto", "bfloat16", "float16"):
            raise ValueError(f"--amp must be auto, bfloat16 or float16, got {self.amp!r}")
        if (isinstance(self.temporal_weight, bool)
                or not isinstance(self.temporal_weight, (int, float))
                or not math.isfinite(self.temporal_weight) or self.temporal_weight < 0):
            raise ValueError(f"--temporal-weight must be a finite number >= 0, got "
                             f"{self.temporal_weight!r}")
        self.temporal_weight = float(self.temporal_weight)
        if self.stop_at is not None and not 0 < self.stop_at <= self.iterations:
            raise ValueError(f"stop_at must be in 1..iterations, got {self.stop_at}")
        self.content_layers = parse_layers(self.content_layers)
        self.style_layers = parse_layers(self.style_layers)

    def style_paths(self) -> list[str]:
        """The style images this run computes targets for: ``style`` as a list, or the one
        style ``add_style`` adds."""
        if self.add_style is not None:
            return [os.fspath(self.add_style)]
        return [self.style] if isinstance(self.style, str) else list(self.style)

    def loss_config(self) -> LossConfig:
        return loss_config(self.preset, content_weight=self.content_weight,
                           style_weight=self.style_weight, tv_weight=self.tv_weight,
                           content_layers=self.content_layers, style_layers=self.style_layers)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    model: nn.Module  # the trained generator (unwrapped, on its training device, train mode)
    iteration: int  # iterations completed
    history: list[dict] = field(default_factory=list)  # one entry per completed iteration
    checkpoint: str | None = None
    final_model: str | None = None
    loss_network: str = ""


# ---------------------------------------------------------------------------------------------
# Generators and the final model file


def build_generator(arch: str, norm: str, styles: int = 1) -> nn.Module:
    """A fresh generator: ``JohnsonNet`` or ``TextureNet`` with the given ``norm`` and number
    of styles (conditional instance norm above 1)."""
    from .. import models

    if styles > 1 and norm == "batch":
        raise ValueError("several styles need --norm instance or fused (conditional instance "
                         "norm); batch norm has no per-style form")
    if arch == "johnson":
        return models.JohnsonNet(norm=norm, styles=styles)
    if arch == "texture":
        return models.TextureNet(norm=norm, styles=styles)
    raise ValueError(f"--arch must be one of {ARCHS}, got {arch!r}")


def save_final_model(model: nn.Module, path: str, meta: dict) -> None:
    """Write the trained generator in the models package's format (atomic; loadable by
    ``sf.models.load`` and ``stylize-fast stylize``), with ``meta`` as its metadata."""
    from .. import models

    models.save(model, path, **meta)


# ---------------------------------------------------------------------------------------------
# Atomic checkpoint files


def atomic_save(obj, path: str) -> None:
    """``torch.save`` so that a crash at any point leaves either the previous file or the new
    one, never a torn one (``stylize_fast._atomic``, the package's one way to write a file)."""
    atomic_torch_save(obj, path)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Read a training checkpoint (``weights_only=True``) and check its format tag."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a stylize_fast training checkpoint")
    if ckpt.get("format_version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint format {ckpt['format_version']}, newer than this "
                         f"stylize_fast understands ({CHECKPOINT_VERSION})")
    return ckpt


# ---------------------------------------------------------------------------------------------
# RNG state as plain tensors / lists (loadable with weights_only=True)


def rng_state(loader_generator: torch.Generator | None = None) -> dict:
    version, state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    out = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if loader_generator is not None:
        out["dataloader"] = loader_generator.get_state()
    return out


def set_rng_state(state: dict, loader_generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "dataloader" in state:
        loader_generator.set_state(state["dataloader"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def versions() -> dict:
    from .. import __version__

    return {"stylize_fast": str(__version__), "torch": str(torch.__version__),
            "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------
# Pieces of the loop


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, iterations: int):
    """``constant``; ``cosine`` from lr to lr/10 over the run; ``step``: x0.1 at 2/3 and 8/9."""
    if schedule == "cosine":
        base = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iterations,
                                                          eta_min=base * 0.1)
    if schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[max(1, iterations * 2 // 3), max(1, iterations * 8 // 9)],
            gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def autocast_context(device: torch.device, amp: str | None):
    if amp is None:
        return contextlib.nullcontext()
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[amp]
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("--amp float16 needs a GPU; use --amp bfloat16 on CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_bfloat16_level() -> str | None:
    """The CPU kernels' instruction-set level when it computes bfloat16 natively (AVX512-BF16),
    else None. Read from the extension (``instance_norm_cpu_isa``: the CPU's best level capped
    by ``STYLIZE_FAST_CPU_ISA``), the package's one way to read it; None without the extension."""
    from .. import _extension

    if not _extension.loaded():
        return None
    level = str(torch.ops.stylize_fast.instance_norm_cpu_isa())
    return level if level == "avx512_bf16" else None


def resolve_amp(amp: str | None, device: torch.device) -> str | None:
    """``--amp`` without a value (``auto``): float16 on GPU; on CPU bfloat16 where the CPU has
    AVX512-BF16, else float32 (None): emulated bfloat16 is slower than float32 there. An
    explicit dtype is taken as given."""
    if amp == "auto":
        if device.type != "cpu":
            return "float16"
        return "bfloat16" if cpu_bfloat16_level() else None
    return amp


def default_workers() -> int:
    """``--workers`` default: 2 processes decoding ahead, one fewer than the CPU count at most so
    that a small machine keeps a core for the step itself."""
    return max(0, min(2, (os.cpu_count() or 1) - 1))


def default_channels_last(norm: str) -> bool:
    """``--channels-last`` default: on for the fused generators (their kernels are
    channels_last-native on CPU and CUDA), off for the plain PyTorch norms."""
    return norm == "fused"


def cache_budget_bytes() -> int:
    """``train_cache_mb`` (``STYLIZE_FAST_TRAIN_CACHE_MB``) in bytes; 0 disables the cache."""
    from .. import config as sf_config

    mb = sf_config.get("train_cache_mb")
    return (DEFAULT_CACHE_MB if mb is None else int(mb)) * 2**20


def make_dataset(files: list[str], image_size: int, workers: int,
                 info: ddp.DistInfo) -> ContentImages:
    """The content images, decoded once into memory when they fit :func:`cache_budget_bytes`.

    The cache is built here, in the main process, before the DataLoader starts its workers:
    forked workers share its pages, the main process's sample images use it too, and every
    worker decodes nothing. (Filled inside the workers instead, each would hold its own copy.)
    """
    budget = cache_budget_bytes()
    need = DecodedImages.decoded_bytes(files, image_size, limit=budget) if budget else 0
    if not budget or need > budget:
        if budget:
            _log(f"content images: more than train_cache_mb={budget // 2**20} decoded; "
                 f"decoding per item", info)
        return ContentImages(files, image_size)
    start = time.perf_counter()
    # Nothing else runs yet: decode on every core this process may use.
    threads = max(1, (os.cpu_count() or 1) // info.world_size)
    cache = DecodedImages.build(files, image_size, threads=threads)
    if workers > 0 and _worker_start_method() != "fork":
        try:  # spawn / forkserver would pickle a copy per worker otherwise
            cache.share_memory_()
        except RuntimeError as exc:  # e.g. a small /dev/shm in a container
            _log(f"content images: cache not in shared memory ({exc}); each worker gets a copy",
                 info)
    _log(f"content images: cached decoded ({cache.nbytes / 2**20:.0f} MB, "
         f"{time.perf_counter() - start:.1f} s)", info)
    return ContentImages(files, image_size, cache=cache)


def _worker_start_method() -> str:
    return multiprocessing.get_start_method(allow_none=True) or \
        multiprocessing.get_all_start_methods()[0]


def save_image_grid(rows: list[torch.Tensor], path: str) -> None:
    """Rows of ``(N, 3, H, W)`` images in [0, 255] tiled into one PNG (row-major)."""
    from PIL import Image

    tiles = [torch.cat(list(r.detach().float().cpu().clamp(0, 255)), dim=2) for r in rows]
    width = max(t.shape[2] for t in tiles)
    tiles = [nn.functional.pad(t, (0, width - t.shape[2])) for t in tiles]
    grid = torch.cat(tiles, dim=1).round().to(torch.uint8).permute(1, 2, 0).numpy()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid).save(path)


def _log(message: str, info: ddp.DistInfo) -> None:
    say(message, info)


def _check_resume_config(saved: dict, config: TrainConfig, world_size: int, saved_world: int,
                         path: str) -> None:
    current = config.to_dict()
    saved = {**_RUN_DEFAULTS, **saved}  # checkpoints written before a field existed
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}" for k in _RUN_DEFINING
             if saved.get(k) != current[k]]
    def style_count(cfg: dict) -> int:
        style = cfg.get("style")
        return len(style) if isinstance(style, (list, tuple)) else 1

    if style_count(saved) != style_count(current):
        diffs.append(f"number of styles: checkpoint {style_count(saved)} vs now "
                     f"{style_count(current)}")
    if (saved.get("add_style") is None) != (current["add_style"] is None):
        diffs.append(f"--add-style: checkpoint {saved.get('add_style')!r} vs now "
                     f"{current['add_style']!r}")
    if saved_world != world_size:
        diffs.append(f"world size: checkpoint {saved_world} vs now {world_size}")
    if diffs:
        raise ValueError(f"--resume: {path} was written by a run with different settings; an exact "
                         f"continuation needs the same ones:\n  " + "\n  ".join(diffs))


# ---------------------------------------------------------------------------------------------
# The loop


def train(config: TrainConfig, model: nn.Module | None = None,
          on_iteration: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train a generator as described by ``config``; see the module docstring.

    ``model``: train this generator instead of ``build_generator(config.arch, config.norm)``
    (the experiment uses it for its instance-norm-with-running-statistics variant; no
    ``model.pth`` is written then, since the models package cannot describe it).
    ``on_iteration(iteration, terms)``: called after every completed iteration.
    """
    device = ddp.device_for_rank(config.device)
    info = ddp.setup(device)
    try:
        return _train(config, model, on_iteration, device, info)
    finally:
        ddp.teardown(info)


def _train(config, model, on_iteration, device, info) -> TrainResult:
    amp = resolve_amp(config.amp, device)
    if config.amp == "auto" and amp is None:
        _log("--amp: this CPU has no AVX512-BF16 (bfloat16 would be emulated, slower than "
             "float32); training in float32 (--amp bfloat16 forces it)", info)
    out_dir = config.output
    ckpt_path = os.path.join(out_dir, CHECKPOINT_NAME)
    if info.is_main:
        os.makedirs(out_dir, exist_ok=True)
        if not config.resume and os.path.exists(ckpt_path):
            raise ValueError(f"{ckpt_path} exists: pass --resume to continue that run, or choose "
                             f"another --output")
    ddp.barrier(info)
    ckpt = load_checkpoint(ckpt_path) if config.resume and os.path.exists(ckpt_path) else None
    if config.channels_last is None:
        # the default; a resumed run keeps the layout it was started with
        saved = ckpt["config"].get("channels_last") if ckpt is not None else None
        config = dataclasses.replace(config, channels_last=saved if isinstance(saved, bool)
                                     else default_channels_last(config.norm))

    seed_everything(config.seed)
    custom_model = model is not None
    style_paths = config.style_paths()
    new_style = None  # with --add-style: the index of the style being added
    base_meta: dict = {}
    if config.add_style is not None:
        if custom_model:
            raise ValueError("train: add_style builds its model from config.model")
        model, base, new_style = extend_model(config.model)
        base_meta = base["metadata"]
        options = base["options"]
        config = dataclasses.replace(config, arch=ARCH_NAMES[base["arch"]],
                                     norm=options.get("norm", "fused"))
        _log(f"adding style {new_style} ({os.path.basename(config.add_style)}) to "
             f"{config.model} ({new_style} styles); only its instance-norm rows train", info)
    elif model is None:
        model = build_generator(config.arch, config.norm, len(style_paths))
    num_styles = int(getattr(model, "styles", 1))
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    trainable = (train_only_new_rows(model, new_style) if new_style is not None
                 else list(model.parameters()))

    loss_cfg = config.loss_config()
    loss_fn = PerceptualLoss(loss_cfg, vgg_weights=config.vgg_weights).to(device)
    loss_label = f"{loss_cfg.vgg}, weights: {loss_fn.vgg.source.label}"
    _log(f"loss network: {loss_label}", info)
    styles = [load_style(p, config.style_size or config.image_size).to(device)
              for p in style_paths]
    loss_fn.set_style(styles)
    if len(styles) > 1:
        _log(f"styles: {len(styles)} ({', '.join(os.path.basename(p) for p in style_paths)}); "
             f"each sample draws one", info)

    files, skipped = find_images(config.data)
    _log(f"content images: {len(files)} in {config.data}"
         f"{f' ({skipped} unreadable files skipped)' if skipped else ''}", info)
    dataset = make_dataset(files, config.image_size, config.workers, info)

    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    scheduler = make_scheduler(optimizer, config.lr_schedule, config.iterations)
    scaler = torch.amp.GradScaler(device.type, enabled=(amp == "float16"))
    loader_gen = torch.Generator().manual_seed(config.seed)

    start = 0
    if config.resume:
        if ckpt is not None:
            _check_resume_config(ckpt["config"], config, info.world_size,
                                 ckpt.get("world_size", 1), ckpt_path)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt.get("grad_scaler"):
                scaler.load_state_dict(ckpt["grad_scaler"])
            set_rng_state(ckpt["rng"], loader_gen)
            start = int(ckpt["iteration"])
            _log(f"resumed from {ckpt_path} at iteration {start}", info)
        else:
            _log(f"--resume: no checkpoint in {out_dir} yet, starting from scratch", info)

    stop = config.stop_at or config.iterations
    sampler = ResumableBatchSampler(len(dataset), config.batch_size, config.seed, start,
                                    max(start, stop), info.rank, info.world_size)
    # One pass over the loader covers the whole run (the sampler spans start..stop), so
    # persistent workers never restart; prefetch_factor stays torch's default (2 batches each).
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=config.workers, generator=loader_gen,
        pin_memory=device.type == "cuda", persistent_workers=config.workers > 0)
    train_model = ddp.wrap(model, info, device)

    sample_inputs = torch.stack([dataset[(i, None)] for i in range(min(4, len(dataset)))])
    log_path = os.path.join(out_dir, "train_log.jsonl")

    def checkpoint(iteration: int) -> None:
        ddp.broadcast_buffers(model, info)
        if info.is_main:
            atomic_save({
                "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                "iteration": iteration, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": rng_state(loader_gen), "config": config.to_dict(),
                "loss_config": loss_cfg.to_dict(), "loss_network": loss_label,
                "loss_network_random": loss_fn.vgg.source.is_random,
                "world_size": info.world_size, "versions": versions(),
            }, ckpt_path)
        ddp.barrier(info)

    def sample(iteration: int) -> None:
        if not info.is_main:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad(), autocast_context(device, amp):
            x = sample_inputs.to(device)
            if num_styles == 1:
                rows = [model(x).float()]
            else:  # one row per style (the new one only when adding a style), at most 8
                shown = [new_style] if new_style is not None else range(min(num_styles, 8))
                rows = [model(x, torch.full((x.shape[0],), k, device=device)).float()
                        for k in shown]
        model.train(was_training)
        save_image_grid([x, *rows], os.path.join(out_dir, "samples",
                                                 f"iter_{iteration:07d}.png"))

    def prepare(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device, non_blocking=True)
        if config.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def temporal_terms(batch: torch.Tensor, iteration: int) -> dict[str, torch.Tensor]:
        # One generator pass over [x, x'] (2B images): the perceptual loss judges the first
        # half (exactly the images of the W=0 path), the temporal loss compares the halves.
        # Batch norm normalises with the statistics of all 2B images (x' is x moved by a few
        # pixels, so they are close to those of the B images alone).
        n = batch.shape[0]
        motion = random_motion(batch, sample_seeds(config.seed, iteration, info.rank, n))
        both = torch.cat([batch, motion.next])
        if config.channels_last:
            both = both.contiguous(memory_format=torch.channels_last)
        if new_style is not None:  # every sample trains the added style
            index = torch.full((n,), new_style, device=device)
        elif num_styles > 1:
            index = draw_style_indices(config.seed, iteration, info.rank, n, num_styles,
                                       info.world_size).to(device)
        else:
            index = None
        output = train_model(both) if index is None else train_model(both, index.repeat(2))
        # with --add-style the loss holds only the new style's targets: no index
        terms = loss_fn(output[:n], batch, index if new_style is None else None)
        temporal = config.temporal_weight * temporal_loss(
            output[:n], output[n:], batch, motion.next, motion.flow, motion.mask)
        terms = {k: v for k, v in terms.items() if k != "total"}
        return {**terms, "temporal": temporal, "total": sum(terms.values()) + temporal}

    def update(batch: torch.Tensor, iteration: int) -> tuple[dict[str, float], float]:
        with autocast_context(device, amp):
            if config.temporal_weight > 0:
                terms = temporal_terms(batch, iteration)
            elif new_style is not None:  # every sample trains the added style
                output = train_model(batch, torch.full((batch.shape[0],), new_style,
                                                       device=device))
                terms = loss_fn(output, batch)
            elif num_styles > 1:
                index = draw_style_indices(config.seed, iteration, info.rank, batch.shape[0],
                                           num_styles, info.world_size).to(device)
                output = train_model(batch, index)
                terms = loss_fn(output, batch, index)
            else:
                output = train_model(batch)
                terms = loss_fn(output, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        values = {k: float(ddp.all_mean(v.detach(), info)) for k, v in terms.items()}
        return values, scheduler.get_last_lr()[0]

    schedule = LoopSchedule(start=start, stop=stop, iterations=config.iterations,
                            log_every=config.log_every, sample_every=config.sample_every,
                            checkpoint_every=config.checkpoint_every, log_path=log_path,
                            progress=config.progress)
    iteration, history = run_loop(loader, schedule, prepare=prepare, update=update,
                                  checkpoint=checkpoint, sample=sample, info=info,
                                  device=device, on_iteration=on_iteration)
    del loader  # stop the workers (and free their pages) before the final save
    summary = wait_summary(history, config.workers, dataset.cache is not None)
    if summary:
        _log(summary, info)

    ddp.broadcast_buffers(model, info)
    if info.enabled and not ddp.replicas_identical(model, info):
        raise RuntimeError("DDP replicas diverged: ranks hold different weights")
    final_path = None
    if iteration >= config.iterations and info.is_main and not custom_model:
        final_path = os.path.join(out_dir, FINAL_NAME)
        names = [os.path.basename(p) for p in style_paths]
        thumbs = torch.stack([thumbnail(s) for s in styles])
        if new_style is not None:  # the extended model's earlier styles, then the new one
            old_thumbs = style_thumbnails(base_meta, new_style)
            if old_thumbs is None or old_thumbs.shape[-1] != thumbs.shape[-1]:
                old_thumbs = torch.full((new_style, *thumbs.shape[1:]), 128, dtype=torch.uint8)
            names = style_names(base_meta, new_style) + names
            thumbs = torch.cat([old_thumbs, thumbs])
        meta = {"arch": config.arch, "norm": config.norm, "iterations": iteration,
                "styles": names, "style_thumbnails": thumbs, "loss_network": loss_label,
                "loss_config": loss_cfg.to_dict(), "seed": config.seed, "versions": versions()}
        if num_styles == 1:
            meta["style"] = names[0]
        if new_style is not None:
            meta["extends"] = os.path.basename(config.model)
        save_final_model(model, final_path, meta)
        _log(f"final model: {final_path}", info)
    ddp.barrier(info)
    return TrainResult(model=model, iteration=iteration, history=history,
                       checkpoint=ckpt_path, final_model=final_path, loss_network=loss_label)
