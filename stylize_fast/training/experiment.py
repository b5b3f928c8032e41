"""The paper's experiment (Ulyanov et al. 2016, "Instance Normalization"): for both generators and
four normalisation variants, train under one budget and measure on held-out images.

Variants:

- ``bn``: BatchNorm2d at train and test (test uses the running statistics).
- ``in_train_bn_test``: instance normalisation in training, batch-norm statistics at test.
  Implemented as ``nn.InstanceNorm2d(affine=True, track_running_stats=True)``: in train mode it
  normalises each image with its own statistics (and accumulates running averages of them); in
  eval mode it normalises with the running averages, i.e. like a batch norm at test time. (The
  running variance is the mean of per-image variances, without the between-image part a
  BatchNorm2d's batch variance would include.)
- ``in``: nn.InstanceNorm2d at train and test (plain PyTorch).
- ``fused``: stylize_fast's FusedInstanceNorm2d (+ fused padded convolutions when available).

Measured on held-out images: content and style loss (weighted as in training); the
contrast-invariance error ``||g(a x + b) - g(x)|| / ||g(x)||`` (no clamping of ``a x + b``, so the
transform is exactly affine) for a few ``(a, b)``; seconds per training iteration; a PNG grid.
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .data import ContentImages, find_images, synthetic_images, synthetic_style
from .losses import PerceptualLoss
from .trainer import TrainConfig, build_generator, save_image_grid, seed_everything, train

VARIANTS: dict[str, str] = {
    "bn": "batch norm (train + test)",
    "in_train_bn_test": "instance norm in training, batch-norm statistics at test",
    "in": "instance norm (train + test)",
    "fused": "fused instance norm (train + test)",
}
ARCHS = ("johnson", "texture")
DEFAULT_CONTRASTS: tuple[tuple[float, float], ...] = ((0.5, 0.0), (0.5, 64.0), (1.5, -64.0),
                                                      (2.0, -128.0))


@dataclass
class ExperimentConfig:
    output: str
    data: str | None = None  # None: synthetic content images are generated
    held_out: str | None = None  # None: synthetic held-out images are generated
    style: str | None = None  # None: a synthetic style image is generated
    archs: Sequence[str] = ARCHS
    variants: Sequence[str] = tuple(VARIANTS)
    iterations: int = 80
    batch_size: int = 2
    image_size: int = 64
    vgg_weights: str | None = "random"
    preset: str = "examples"
    lr: float = 1e-3
    seed: int = 0
    workers: int = 0
    device: str | None = None
    contrasts: Sequence[tuple[float, float]] = field(default_factory=lambda: DEFAULT_CONTRASTS)
    num_synthetic: int = 24
    num_held_out: int = 4
    progress: bool = True

    def __post_init__(self) -> None:
        for a in self.archs:
            if a not in ARCHS:
                raise ValueError(f"--archs: unknown generator {a!r}; choose from {ARCHS}")
        for v in self.variants:
            if v not in VARIANTS:
                raise ValueError(f"--variants: unknown variant {v!r}; choose from {list(VARIANTS)}")
        if self.image_size % 32:
            raise ValueError(f"--image-size must be a multiple of 32 (both generators keep the "
                             f"size exactly then), got {self.image_size}")


def make_generator(arch: str, variant: str) -> nn.Module:
    """The generator for one experiment cell (see the module docstring for the variants)."""
    if variant == "bn":
        return build_generator(arch, "batch")
    if variant == "fused":
        return build_generator(arch, "fused")
    model = build_generator(arch, "instance")
    if variant == "in_train_bn_test":
        _track_running_stats(model)
    return model


def _track_running_stats(model: nn.Module) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.InstanceNorm2d:
                tracked = nn.InstanceNorm2d(child.num_features, child.eps, child.momentum,
                                            affine=child.affine, track_running_stats=True)
                if child.affine:
                    tracked.load_state_dict(child.state_dict(), strict=False)
                setattr(parent, name, tracked)


@torch.no_grad()
def contrast_error(model: nn.Module, images: torch.Tensor, a: float, b: float) -> float:
    """Mean over images of ``||g(a x + b) - g(x)|| / ||g(x)||`` (model in eval mode)."""
    y = model(images).double().flatten(1)
    y2 = model(images * a + b).double().flatten(1)
    return ((y2 - y).norm(dim=1) / y.norm(dim=1).clamp_min(1e-12)).mean().item()


def _prepare_data(cfg: ExperimentConfig) -> tuple[str, str, str]:
    root = os.path.join(cfg.output, "inputs")
    size = cfg.image_size + cfg.image_size // 4
    data = cfg.data
    if data is None:
        data = os.path.join(root, "train")
        synthetic_images(data, cfg.num_synthetic, size, seed=cfg.seed)
    held_out = cfg.held_out
    if held_out is None:
        held_out = os.path.join(root, "held_out")
        synthetic_images(held_out, cfg.num_held_out, size, seed=cfg.seed + 1000, prefix="held")
    style = cfg.style or synthetic_style(os.path.join(root, "style.png"), cfg.image_size,
                                         seed=cfg.seed + 2000)
    return data, held_out, style


def run_experiment(cfg: ExperimentConfig) -> list[dict]:
    """Train and evaluate every (arch, variant); writes ``results.csv``, ``results.md`` and
    ``grid_<arch>.png`` into ``cfg.output`` and returns the result rows."""
    runs_dir = os.path.join(cfg.output, "runs")
    if os.path.exists(runs_dir):
        raise ValueError(f"{runs_dir} exists: choose another --output for a fresh experiment")
    data, held_out_dir, style = _prepare_data(cfg)
    files, _ = find_images(held_out_dir)
    held_out = torch.stack([ContentImages(files, cfg.image_size)[(i, None)]
                            for i in range(len(files))])
    rows: list[dict] = []
    for arch in cfg.archs:
        grid_rows = []
        a0, b0 = cfg.contrasts[0] if cfg.contrasts else (0.5, 64.0)
        grid_rows.append(torch.cat([held_out[:3], (held_out[:3] * a0 + b0)]))
        for variant in cfg.variants:
            print(f"experiment: {arch} / {variant}: {VARIANTS[variant]}", file=sys.stderr,
                  flush=True)
            seed_everything(cfg.seed)  # the same initial conv weights for every variant
            model = make_generator(arch, variant)
            tc = TrainConfig(style=style, data=data, output=os.path.join(runs_dir,
                                                                          f"{arch}_{variant}"),
                             arch=arch, norm="instance" if variant.startswith("in") else
                             ("batch" if variant == "bn" else "fused"),
                             iterations=cfg.iterations, batch_size=cfg.batch_size,
                             image_size=cfg.image_size, vgg_weights=cfg.vgg_weights,
                             checkpoint_every=cfg.iterations, sample_every=cfg.iterations,
                             log_every=max(1, cfg.iterations // 10), seed=cfg.seed,
                             preset=cfg.preset, lr=cfg.lr, workers=cfg.workers,
                             device=cfg.device, progress=cfg.progress)
            start = time.perf_counter()
            result = train(tc, model=model)
            wall = time.perf_counter() - start
            steps = [h["seconds"] for h in result.history[2:-1]] or \
                [h["seconds"] for h in result.history]
            model = result.model.eval()
            device = next(model.parameters()).device
            x = held_out.to(device)
            loss_fn = PerceptualLoss(tc.loss_config(), vgg_weights=cfg.vgg_weights).to(device)
            from .data import load_style

            loss_fn.set_style(load_style(style, cfg.image_size).to(device))
            with torch.no_grad():
                terms = loss_fn(model(x), x)
                grid_rows.append(torch.cat([model(x[:3]), model(x[:3] * a0 + b0)]).float().cpu())
            row = {"arch": arch, "variant": variant, "description": VARIANTS[variant],
                   "iterations": result.iteration,
                   "seconds_per_iteration": statistics.median(steps),
                   "train_wall_seconds": wall,
                   "content_loss": terms["content"].item(), "style_loss": terms["style"].item()}
            errors = []
            for a, b in cfg.contrasts:
                err = contrast_error(model, x, a, b)
                row[f"contrast_err_a{a:g}_b{b:g}"] = err
                errors.append(err)
            row["contrast_err_mean"] = sum(errors) / len(errors) if errors else float("nan")
            row["loss_network"] = result.loss_network
            rows.append(row)
        save_image_grid(grid_rows, os.path.join(cfg.output, f"grid_{arch}.png"))
    write_results(rows, cfg)
    return rows


def write_results(rows: list[dict], cfg: ExperimentConfig) -> None:
    os.makedirs(cfg.output, exist_ok=True)
    with open(os.path.join(cfg.output, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(cfg.output, "results.md"), "w") as f:
        f.write(markdown_table(rows))


def markdown_table(rows: list[dict]) -> str:
    """The results as a markdown table, plus the contrast-invariance ratios per generator."""
    contrast_cols = [k for k in rows[0] if k.startswith("contrast_err_a")]
    head = ["generator", "variant", "s/iter", "content", "style",
            *[c.replace("contrast_err_", "").replace("_", " ") for c in contrast_cols], "mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["arch"], r["variant"], f"{r['seconds_per_iteration']:.3f}",
                 f"{r['content_loss']:.4g}", f"{r['style_loss']:.4g}",
                 *[f"{r[c]:.2e}" for c in contrast_cols], f"{r['contrast_err_mean']:.2e}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    by = {(r["arch"], r["variant"]): r for r in rows}
    for arch in dict.fromkeys(r["arch"] for r in rows):
        inn, bnt = by.get((arch, "in")), by.get((arch, "in_train_bn_test"))
        if inn and bnt:
            ratio = bnt["contrast_err_mean"] / max(inn["contrast_err_mean"], 1e-300)
            verdict = "holds" if ratio >= 10 else "does NOT hold"
            lines.append(f"- {arch}: contrast error, IN-train/BN-test over IN (train+test): "
                         f"{ratio:.3g}x (expectation >= 10x {verdict})")
    lines.append(f"- loss network: {rows[0]['loss_network']}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Speed check: one training step of the fused JohnsonNet vs plain PyTorch layers


def _step_fn(model, loss_fn, optimizer, x, amp: str | None):
    from .trainer import autocast_context

    device = x.device

    def step():
        with autocast_context(device, amp):
            terms = loss_fn(model(x), x)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
    return step


def _categorise(name: str) -> str:
    n = name.lower()
    if "conv" in n:
        return "convs"
    if any(k in n for k in ("norm", "pad", "relu", "threshold")):
        return "norm+pad+relu"
    return "other"


def speed_check(batch_size: int = 4, image_size: int = 256, repeats: int = 3,
                device: str = "cpu", seed: int = 0) -> dict:
    """Time a training step (generator fwd, VGG-16 ``examples`` loss, backward, Adam step) of
    ``JohnsonNet(norm="fused")`` in channels_last with the loss network on the package kernels
    (what ``stylize-fast train`` runs) against ``norm="instance"`` in NCHW with the eager loss
    network (the PyTorch examples'), same weights, float32 and bfloat16 autocast, in interleaved
    repeats; split a step into loss network / generator convs /
    generator norm+pad+relu / other. Returns a dict of medians (seconds), ratios and splits."""
    from .. import backends, models
    from .losses import loss_config

    torch.manual_seed(seed)
    dev = torch.device(device)
    x = (torch.rand(batch_size, 3, image_size, image_size, device=dev) * 255)
    style = torch.rand(1, 3, image_size, image_size, device=dev) * 255
    losses = {}
    for name, kernels in (("fused", "package"), ("instance", "eager")):
        losses[name] = PerceptualLoss(loss_config("examples"), vgg_weights="random",
                                      kernels=kernels).to(dev)
        losses[name].set_style(style)
    fused = models.JohnsonNet(norm="fused").to(dev, memory_format=torch.channels_last)
    plain = models.JohnsonNet(norm="instance").to(dev)
    plain.load_state_dict(fused.state_dict())
    inputs = {"fused": x.contiguous(memory_format=torch.channels_last), "instance": x}
    configs = {}
    for name, model in (("fused", fused), ("instance", plain)):
        opt = torch.optim.Adam(model.parameters(), lr=1e-12)  # weights barely move
        for amp in (None, "bfloat16"):
            configs[f"{name}/{amp or 'float32'}"] = _step_fn(model, losses[name], opt,
                                                             inputs[name], amp)
    times: dict[str, list[float]] = {k: [] for k in configs}
    for fn in configs.values():  # warm-up
        fn()
    for r in range(repeats):
        order = list(configs) if r % 2 == 0 else list(reversed(configs))
        for key in order:
            start = time.perf_counter()
            configs[key]()
            times[key].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"median_seconds": med, "times": times,
              "ratio_fused_over_instance_float32":
                  med["fused/float32"] / med["instance/float32"],
              "ratio_fused_over_instance_bfloat16":
                  med["fused/bfloat16"] / med["instance/bfloat16"],
              "ratio_bfloat16_over_float32_fused": med["fused/bfloat16"] / med["fused/float32"],
              "ratio_bfloat16_over_float32_instance":
                  med["instance/bfloat16"] / med["instance/float32"],
              "backends": backends.available(),
              "threads": torch.get_num_threads(), "batch_size": batch_size,
              "image_size": image_size, "repeats": repeats}
    result["split"] = {name: _profile_split(model, losses[name], inputs[name]) for name, model in
                       (("fused", fused), ("instance", plain))}
    return result


def _profile_split(model: nn.Module, loss_fn: PerceptualLoss, x: torch.Tensor) -> dict:
    """Fractions of one float32 step: the loss network (VGG forward + backward to the generator
    output, timed alone), the generator's convolutions / norm+pad+relu / other ops (self CPU time
    of its forward + backward under torch.profiler), and the rest (optimizer, glue)."""
    from torch.profiler import ProfilerActivity, profile

    opt = torch.optim.Adam(model.parameters(), lr=1e-12)
    step = _step_fn(model, loss_fn, opt, x, None)
    step()
    start = time.perf_counter()
    step()
    total = time.perf_counter() - start
    y = model(x).detach().requires_grad_(True)
    start = time.perf_counter()
    loss_fn(y, x)["total"].backward()
    loss_net = time.perf_counter() - start
    grad = torch.randn_like(y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x).backward(grad)
    by_cat: dict[str, float] = {"convs": 0.0, "norm+pad+relu": 0.0, "other": 0.0}
    ops: dict[str, float] = {}
    for ev in prof.key_averages():
        # Count leaf work only: self time of every op (autograd wrappers have ~0 self time).
        t = ev.self_cpu_time_total / 1e6
        by_cat[_categorise(ev.key)] += t
        ops[ev.key] = t
    gen_total = sum(by_cat.values())
    top = dict(sorted(ops.items(), key=lambda kv: -kv[1])[:12])
    # Fractions of the separately timed step; the parts come from separate runs, so on a busy
    # machine they need not add up to 1 exactly (absolute seconds are reported too).
    split = {"step_seconds": total, "loss_network_seconds": loss_net,
             "loss_network": loss_net / total}
    for k, v in by_cat.items():
        split[f"generator_{k}"] = v / total
        split[f"generator_{k}_seconds"] = v
    split["rest"] = max(0.0, 1 - loss_net / total - gen_total / total)
    split["generator_top_ops_seconds"] = top
    return split
