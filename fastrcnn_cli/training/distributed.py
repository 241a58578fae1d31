"""Data-parallel training helpers: launched with ``torchrun --nproc-per-node P``, every process trains on its
own batches (N images each, so the effective batch is P x N) and DistributedDataParallel averages the
gradients (gloo on the CPU, NCCL on GPUs). Process 0 alone writes the run folder and evaluates."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """The process group torchrun describes in the environment (a single process without one)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info_ = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info_


def barrier(d: DistInfo) -> None:
    if d.enabled:
        dist.barrier()


def broadcast_ints(d: DistInfo, *values: int) -> tuple[int, ...]:
    """Process 0's ``values`` on every process."""
    if not d.enabled:
        return values
    numbers = torch.tensor(values, dtype=torch.long)
    dist.broadcast(numbers, 0)
    return tuple(int(v) for v in numbers)


def finish(d: DistInfo) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
