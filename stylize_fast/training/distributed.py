"""Distributed data parallel on top of torch.distributed (gloo on CPU, nccl on GPU).

``stylize-fast train`` under ``torchrun --nproc_per_node=K`` finds ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` in the environment and trains with DistributedDataParallel; each rank reads its
own slice of every global batch (data.ResumableBatchSampler), only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> DistInfo:
    """Join the process group described by the torchrun environment (no-op for one process).

    On CUDA each rank uses ``cuda:LOCAL_RANK``; callers should pick the device with
    :func:`device_for_rank` first.
    """
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, False)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
    return DistInfo(rank, world, local_rank, True)


def device_for_rank(device: str | None) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` for a CUDA run under torchrun."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and env_world_size() > 1 and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when running distributed.

    Batch-norm buffers are broadcast from rank 0 at every forward (DDP's default), so replicas
    stay identical; the per-rank batch statistics are what each rank normalises with.
    """
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging)."""
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank.

    DDP already broadcasts them at the start of each forward, so rank 0's are the ones in use;
    after the last forward the ranks' local updates differ, and this makes them agree again
    (before a checkpoint or the final model)."""
    if not info.enabled:
        return
    for buf in unwrap(model).buffers():
        dist.broadcast(buf.data, src=0)


def replicas_identical(model: nn.Module, info: DistInfo) -> bool:
    """True when every rank holds bitwise the same parameters and buffers as rank 0."""
    if not info.enabled:
        return True
    flat = torch.cat([t.detach().reshape(-1).double() for t in unwrap(model).state_dict().values()
                      if t.is_floating_point()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    same = torch.tensor([int(torch.equal(flat, ref))], device=flat.device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())


def teardown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
