"""Helpers shared by the trainer tests: a tiny training configuration and a state comparison."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from stylize_fast.training.trainer import TrainConfig, train


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


def _train_rank(rank: int, world: int, port: int, config: TrainConfig, results: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    result = train(config)
    torch.save({k: v.clone() for k, v in result.model.state_dict().items()},
               os.path.join(results, f"rank{rank}.pt"))


def train_on_ranks(config: TrainConfig, results, world: int = 2) -> list[dict]:
    """Run ``train(config)`` on ``world`` gloo ranks (processes on 127.0.0.1, one thread each)
    and return each rank's final state dict (saved into the folder ``results``, which must not
    be ``config.output``: that folder's contents are checked by the tests)."""
    os.makedirs(results, exist_ok=True)
    mp.spawn(_train_rank, args=(world, free_port(), config, str(results)), nprocs=world,
             join=True)
    return [torch.load(os.path.join(results, f"rank{r}.pt"), weights_only=True)
            for r in range(world)]
