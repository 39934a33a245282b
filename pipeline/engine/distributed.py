"""Devices and processes: the training device, this process's place in a ``torchrun`` job, and the
few collective operations the engine needs (all of them no-ops when training alone)."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.core.errors import ParamsError


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job; rank 0 of 1 when training alone.

    Only rank 0 (``main``) writes files and logs curves; every rank takes a disjoint share of
    each global batch, and validation outputs are gathered so every rank computes the same metrics.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed_from_env() -> Distributed:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK, or a single process."""
    if "RANK" not in os.environ:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("train.device = 'cuda': no CUDA device is available; use auto or cpu")
    return torch.device(name)


def training_device(name: str, dist: Distributed) -> torch.device:
    """``train.device`` for this process: under DDP on GPUs, the GPU of this rank's local rank."""
    device = resolve_device(name)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    return device


@contextlib.contextmanager
def process_group(backend: str, device_name: str) -> Iterator[None]:
    """The job's process group for the duration (``train.ddp.backend``; ``auto``: nccl on GPUs, gloo on CPUs)."""
    if backend == "auto":
        backend = "nccl" if resolve_device(device_name).type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def wrap(model: nn.Module, device: torch.device, dist: Distributed) -> nn.parallel.DistributedDataParallel | None:
    """The model in DistributedDataParallel under DDP (gradients all-reduced at each step), else None."""
    if not dist.enabled:
        return None
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sum_over_ranks(values: torch.Tensor, dist: Distributed) -> torch.Tensor:
    """``values`` summed over every rank (in place)."""
    if dist.enabled:
        torch.distributed.all_reduce(values)
    return values


def broadcast_buffers(model: nn.Module, dist: Distributed) -> None:
    """Rank 0's buffers (batch-norm statistics) on every rank.

    Each rank's last forward updated its own batch-norm statistics; validating (and saving) rank 0's
    means every shard is scored by the very model that is checkpointed."""
    if dist.enabled:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)


def shard(n: int, dist: Distributed) -> tuple[int, int, int]:
    """This rank's contiguous shard of ``n`` rows: (shard size, start, stop)."""
    size = math.ceil(n / dist.world)
    return size, dist.rank * size, min(n, (dist.rank + 1) * size)


def gather_shards(out: torch.Tensor, size: int, n: int, dist: Distributed) -> torch.Tensor:
    """Every rank's shard of rows (``size`` rows each, the last one possibly shorter), in rank order: [n, ...]."""
    if not dist.enabled:
        return out
    padded = torch.zeros((size, *out.shape[1:]), dtype=out.dtype, device=out.device)
    padded[: len(out)] = out
    gathered = [torch.empty_like(padded) for _ in range(dist.world)]
    torch.distributed.all_gather(gathered, padded)
    return torch.cat(gathered)[:n]
