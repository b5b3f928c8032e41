"""Helpers shared by the trainer tests: a tiny training configuration and a state comparison."""

from __future__ import annotations

import socket

import torch

from stylize_fast.training.trainer import TrainConfig


def tiny_config(images: dict, output, **overrides) -> TrainConfig:
    """A JohnsonNet (fused) run of a few 32x32 iterations on ``images`` ({"data", "style"}) with
    an untrained loss network, no workers and no progress bar; ``overrides`` win."""
    base = dict(style=images["style"], data=images["data"], output=str(output), arch="johnson",
                norm="fused", iterations=6, batch_size=2, image_size=32, vgg_weights="random",
                checkpoint_every=2, seed=3, workers=0, sample_every=3, log_every=1,
                progress=False, preset="examples", style_layers="relu1_2,relu2_2")
    base.update(overrides)
    return TrainConfig(**base)


def assert_same_state(a: dict, b: dict) -> None:
    """Two state dicts with the same keys and bit-identical tensors."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a DDP rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
