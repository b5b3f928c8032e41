"""Decoder training for arbitrary-style transfer (``stylize-fast train --arch adain``), after Huang
& Belongie 2017: the VGG-19 encoder ``f`` is frozen; for a content batch ``c`` and a style batch
``s``, ``t = AdaIN(f(c), f(s))`` and the decoder ``g`` learns to invert it:

    content loss = MSE(f(g(t)), t) at relu4_1
    style loss   = sum over relu1_1, relu2_1, relu3_1, relu4_1 of
                   MSE(mean(phi(g(t))), mean(phi(s))) + MSE(std(phi(g(t))), std(phi(s)))
    total        = content_weight * content + style_weight * style

with Adam on the decoder only, learning rate ``lr / (1 + lr_decay * iteration)``.

Content and style crops come from two :class:`~stylize_fast.training.data.ResumableBatchSampler`
streams (the style one with its own seed), zipped into one DataLoader: the batches are a pure
function of (seed, iteration), and a checkpoint (decoder, optimizer, grad scaler, RNG states,
iteration, configuration; the trainer's format, written atomically, ``weights_only``-loadable)
lets ``--resume`` continue bitwise as an uninterrupted run would. Single process (no DDP).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from . import distributed as ddp
from .data import ResumableBatchSampler, find_images
from .loop import LoopSchedule, run_loop, say
from .losses import content_loss
from .trainer import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    FINAL_NAME,
    TrainResult,
    atomic_save,
    autocast_context,
    default_workers,
    load_checkpoint,
    make_dataset,
    resolve_amp,
    rng_state,
    save_final_model,
    save_image_grid,
    seed_everything,
    set_rng_state,
    versions,
)

ARCH = "adain"  # the checkpoint's "arch" tag: a JohnsonNet run's checkpoint cannot resume here
# Mixed into the seed of the style stream; the sampler hashes its seed, so the two streams are
# independent.
STYLE_SEED_SALT = 0x5354594C45  # "STYLE"
# Fields that define the sequence of updates: a resumed run must agree on all of them. Not
# ``iterations``: nothing depends on the total, so a finished run may be extended.
_RUN_DEFINING = ("batch_size", "image_size", "lr", "lr_decay", "content_weight", "style_weight",
                 "seed", "amp", "vgg_weights")


@dataclass
class AdaINTrainConfig:
    """Everything an AdaIN decoder training run depends on (``stylize-fast train --arch adain``).
    Defaults are Huang & Belongie's (batch 8, 256 px crops, lr 1e-4 with decay 5e-5, style
    weight 10, 160k iterations)."""

    data: str  # content image folder (recursive)
    style_data: str  # style image folder (recursive)
    output: str
    iterations: int = 160000
    batch_size: int = 8
    image_size: int = 256  # short side resized to this, then a square crop of this side
    lr: float = 1e-4
    lr_decay: float = 5e-5  # lr at iteration i (0-based): lr / (1 + lr_decay * i)
    content_weight: float = 1.0
    style_weight: float = 10.0
    vgg_weights: str | None = None  # file, "random", or None (hub cache / download)
    checkpoint_every: int = 1000
    resume: bool = False
    seed: int = 42
    workers: int | None = None  # None: trainer.default_workers()
    device: str | None = None
    progress: bool = True
    log_every: int = 50
    stop_at: int | None = None  # stop (with a checkpoint) after this iteration, as if killed
    amp: str | None = None  # None, "auto", "bfloat16", "float16" (as the trainer's --amp)
    sample_every: int = 500  # sample grid (content / style / output) every this many iterations

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "image_size", "checkpoint_every", "log_every",
                     "sample_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, "
                                 f"got {value!r}")
        if self.image_size < 16 or self.image_size % 8:
            raise ValueError(f"--image-size must be a multiple of 8 and at least 16 (the encoder "
                             f"works at 1/8 resolution), got {self.image_size}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.lr_decay, (int, float)) and self.lr_decay >= 0
                and math.isfinite(self.lr_decay)):
            raise ValueError(f"--lr-decay must be a number >= 0, got {self.lr_decay!r}")
        for name in ("content_weight", "style_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"--{name.replace('_', '-')} must be a number >= 0, "
                                 f"got {value!r}")
        if self.content_weight == 0 and self.style_weight == 0:
            raise ValueError("--content-weight and --style-weight are both 0: nothing to train")
        if self.workers is None:
            self.workers = default_workers()
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"--workers must be an integer >= 0, got {self.workers!r}")
        if self.amp not in (None, "auto", "bfloat16", "float16"):
            raise ValueError(f"--amp must be auto, bfloat16 or float16, got {self.amp!r}")
        if self.stop_at is not None and not (
                isinstance(self.stop_at, int) and 0 < self.stop_at <= self.iterations):
            raise ValueError(f"stop_at must be in 1..iterations, got {self.stop_at!r}")

    def learning_rate(self, iteration: int) -> float:
        """Huang's schedule: the rate of the update made after ``iteration`` completed ones."""
        return self.lr / (1.0 + self.lr_decay * iteration)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Data: (content, style) crop pairs


class _Pairs(torch.utils.data.Dataset):
    """Items ``((content_index, crop_seed), (style_index, crop_seed))`` -> (content crop, style
    crop), each ``(3, S, S)`` float32 0-255."""

    def __init__(self, content, style) -> None:
        self.content, self.style = content, style

    def __len__(self) -> int:
        return len(self.content)

    def __getitem__(self, item):
        content_item, style_item = item
        return self.content[content_item], self.style[style_item]


class _PairSampler(torch.utils.data.Sampler):
    """Iteration ``t``'s batch: the content stream's batch ``t`` zipped with the style stream's."""

    def __init__(self, content: ResumableBatchSampler, style: ResumableBatchSampler) -> None:
        self.content, self.style = content, style

    def __len__(self) -> int:
        return len(self.content)

    def __iter__(self):
        for t in range(self.content.start, self.content.stop):
            yield list(zip(self.content.batch_at(t), self.style.batch_at(t)))


def _images(folder: str, flag: str) -> list[str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{flag}: {folder!r} is not a directory")
    files, skipped = find_images(folder)
    if not files:
        raise ValueError(f"{flag}: no readable images found in {folder!r}")
    say(f"{flag}: {len(files)} images in {folder}"
         f"{f' ({skipped} unreadable files skipped)' if skipped else ''}")
    return files


# ---------------------------------------------------------------------------------------------
# Loss


def adain_losses(model: nn.Module, content: torch.Tensor, style: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """Huang's unweighted losses for one batch (see the module docstring) and the decoder output:
    ``{"content", "style"}`` float32 scalars and ``"output"``. ``model`` is an
    :class:`~stylize_fast.models.adain.AdaINNet`; gradients reach its decoder only."""
    from ..models.adain import CONTENT_LAYER, ENCODER_LAYERS

    with torch.no_grad():
        style_features = model.encoder(style, layers=ENCODER_LAYERS)
        target_stats = {k: model.feature_stats(v) for k, v in style_features.items()}
        target = model.adain(model.encode(content), *target_stats[CONTENT_LAYER])
    output = model.decode(target)
    features = model.encoder(output, layers=ENCODER_LAYERS)
    c = content_loss(features[CONTENT_LAYER], target)
    s = None
    for name in ENCODER_LAYERS:
        mean, std = model.feature_stats(features[name])
        target_mean, target_std = target_stats[name]
        term = (nn.functional.mse_loss(mean, target_mean.expand_as(mean))
                + nn.functional.mse_loss(std, target_std.expand_as(std)))
        s = term if s is None else s + term
    return {"content": c.float(), "style": s.float(), "output": output}


# ---------------------------------------------------------------------------------------------
# The loop


def _check_resume(ckpt: dict, config: AdaINTrainConfig, path: str) -> None:
    if ckpt.get("arch") != ARCH:
        raise ValueError(f"--resume: {path} is not from an --arch adain run (it is from "
                         f"--arch {ckpt.get('config', {}).get('arch', '?')})")
    saved, current = ckpt["config"], config.to_dict()
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}" for k in _RUN_DEFINING
             if saved.get(k) != current[k]]
    if diffs:
        raise ValueError(f"--resume: {path} was written by a run with different settings; an exact "
                         f"continuation needs the same ones:\n  " + "\n  ".join(diffs))


def train_adain(config: AdaINTrainConfig) -> TrainResult:
    """Train an :class:`~stylize_fast.models.AdaINNet` decoder as ``config`` says.

    Writes ``checkpoint.pth`` (every ``checkpoint_every`` iterations, at ``stop_at`` and on
    SIGINT / SIGTERM), ``train_log.jsonl``, ``samples/iter_*.png`` and, once ``iterations`` are
    done, ``model.pth`` (:func:`stylize_fast.models.save`; ``stylize-fast stylize`` loads it).

    Returns:
        ``TrainResult``: the model (train mode), iterations completed, one history entry per
        iteration of this call (``content``, ``style`` weighted, ``total``, ``lr``, timings),
        the checkpoint and final model paths, the loss network's weight label.
    """
    from ..models.adain import AdaINNet

    if ddp.env_world_size() > 1:
        raise ValueError("--arch adain trains in one process; run it without torchrun")
    device = ddp.device_for_rank(config.device)
    amp = resolve_amp(config.amp, device)
    out_dir = config.output
    ckpt_path = os.path.join(out_dir, CHECKPOINT_NAME)
    os.makedirs(out_dir, exist_ok=True)
    if not config.resume and os.path.exists(ckpt_path):
        raise ValueError(f"{ckpt_path} exists: pass --resume to continue that run, or choose "
                         f"another --output")
    ckpt = load_checkpoint(ckpt_path) if config.resume and os.path.exists(ckpt_path) else None
    if ckpt is not None:
        _check_resume(ckpt, config, ckpt_path)

    seed_everything(config.seed)
    model = AdaINNet("fused", vgg_weights=config.vgg_weights).to(device).train()
    loss_label = f"vgg19 to relu4_1, weights: {model.encoder.source.label}"
    say(f"loss network / encoder: {loss_label}")

    info = ddp.DistInfo()
    content_set = make_dataset(_images(config.data, "--data"), config.image_size,
                               config.workers, info)
    style_set = make_dataset(_images(config.style_data, "--style-data"), config.image_size,
                             config.workers, info)

    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=(amp == "float16"))
    loader_gen = torch.Generator().manual_seed(config.seed)
    start = 0
    if ckpt is not None:
        model.decoder.load_state_dict(ckpt["decoder"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("grad_scaler"):
            scaler.load_state_dict(ckpt["grad_scaler"])
        set_rng_state(ckpt["rng"], loader_gen)
        start = int(ckpt["iteration"])
        say(f"resumed from {ckpt_path} at iteration {start}")
    elif config.resume:
        say(f"--resume: no checkpoint in {out_dir} yet, starting from scratch")

    stop = max(start, config.stop_at or config.iterations)
    sampler = _PairSampler(
        ResumableBatchSampler(len(content_set), config.batch_size, config.seed, start, stop),
        ResumableBatchSampler(len(style_set), config.batch_size,
                              config.seed ^ STYLE_SEED_SALT, start, stop))
    loader = torch.utils.data.DataLoader(
        _Pairs(content_set, style_set), batch_sampler=sampler, num_workers=config.workers,
        generator=loader_gen, pin_memory=device.type == "cuda",
        persistent_workers=config.workers > 0)
    sample_content = torch.stack([content_set[(i, None)] for i in range(min(4, len(content_set)))])
    sample_style = torch.stack([style_set[(i % len(style_set), None)]
                                for i in range(sample_content.shape[0])])
    log_path = os.path.join(out_dir, "train_log.jsonl")

    def checkpoint(iteration: int) -> None:
        atomic_save({
            "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "arch": ARCH,
            "iteration": iteration, "decoder": model.decoder.state_dict(),
            "optimizer": optimizer.state_dict(),
            "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "rng": rng_state(loader_gen), "config": config.to_dict(),
            "loss_network": loss_label, "loss_network_random": model.encoder.source.is_random,
            "world_size": 1, "versions": versions(),
        }, ckpt_path)

    def sample(iteration: int) -> None:
        model.eval()
        with torch.no_grad(), autocast_context(device, amp):
            c, s = sample_content.to(device), sample_style.to(device)
            y = model(c, s).float()
        model.train()
        save_image_grid([c, s, y], os.path.join(out_dir, "samples", f"iter_{iteration:07d}.png"))

    def prepare(batch):
        return tuple(t.to(device, non_blocking=True) for t in batch)

    def update(batch, iteration: int) -> tuple[dict[str, float], float]:
        content, style = batch
        lr = config.learning_rate(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast_context(device, amp):
            losses = adain_losses(model, content, style)
        terms = {"content": config.content_weight * losses["content"],
                 "style": config.style_weight * losses["style"]}
        terms["total"] = terms["content"] + terms["style"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
        return {k: float(v.detach()) for k, v in terms.items()}, lr

    schedule = LoopSchedule(start=start, stop=stop, iterations=config.iterations,
                            log_every=config.log_every, sample_every=config.sample_every,
                            checkpoint_every=config.checkpoint_every, log_path=log_path,
                            progress=config.progress, description="train adain")
    iteration, history = run_loop(loader, schedule, prepare=prepare, update=update,
                                  checkpoint=checkpoint, sample=sample, info=info,
                                  device=device)
    del loader  # stop the workers before the final save

    final_path = None
    if iteration >= config.iterations:
        final_path = os.path.join(out_dir, FINAL_NAME)
        save_final_model(model, final_path, {
            "arch": ARCH, "iterations": iteration,
            "data": os.path.basename(os.path.normpath(config.data)),
            "style_data": os.path.basename(os.path.normpath(config.style_data)),
            "loss_network": loss_label, "image_size": config.image_size,
            "content_weight": config.content_weight, "style_weight": config.style_weight,
            "seed": config.seed, "versions": versions()})
        say(f"final model: {final_path}")
    return TrainResult(model=model, iteration=iteration, history=history, checkpoint=ckpt_path,
                       final_model=final_path, loss_network=loss_label)
