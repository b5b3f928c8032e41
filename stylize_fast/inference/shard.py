"""Stylising at scale: ``torchrun --nproc_per_node=K -m stylize_fast stylize --input FOLDER
--output OUT`` gives each rank its share of the inputs, and a re-run skips what is done.

- **Sharding** needs no process group: every rank lists the same inputs (sorted, as
  :func:`~stylize_fast.inference.files.collect_jobs` returns them) and takes every K-th one,
  starting at its rank. Each input is processed by exactly one rank; nothing is exchanged.
- **Resuming**: every output is written atomically (``stylize_fast._atomic``), so an output that
  exists is complete. Under torchrun, outputs that exist are skipped (``--overwrite`` redoes
  them); in one process ``--skip-existing`` asks for the same. A job killed midway and run
  again finishes the rest and redoes nothing complete.
- Each rank picks its device: ``cuda:LOCAL_RANK`` when ``--device cuda`` is given, else the
  device asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """This process's place among the ranks that share a job (1 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def label(self) -> str:
        return f"rank {self.rank}/{self.world_size}"


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r} "
                         f"(set by torchrun)") from None


def current_shard() -> Shard:
    """The shard torchrun describes in ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Shard(rank, world, local)


def shard_device(device: str, shard: Shard) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` for a distributed run (one GPU per rank); any explicit
    device (``cuda:1``, ``cpu``) is kept."""
    if shard.distributed and device == "cuda":
        return f"cuda:{shard.local_rank}"
    return device


@dataclass
class Selection:
    """The jobs this rank runs, and what it left out."""

    jobs: list[tuple[str, str]]
    other_ranks: int  # jobs another rank owns
    already_done: list[str]  # outputs that exist (skipped)


def select_jobs(jobs: Sequence[tuple[str, str]], shard: Shard,
                skip_existing: bool) -> Selection:
    """This rank's share of ``jobs`` (every ``world_size``-th, from ``rank``), without those
    whose output exists when ``skip_existing``. The assignment depends only on the job list, so
    a re-run gives every rank the same share as before."""
    mine = [job for i, job in enumerate(jobs) if i % shard.world_size == shard.rank]
    done = [dst for _, dst in mine if skip_existing and os.path.isfile(dst)]
    todo = [job for job in mine if not (skip_existing and os.path.isfile(job[1]))]
    return Selection(todo, len(jobs) - len(mine), done)
