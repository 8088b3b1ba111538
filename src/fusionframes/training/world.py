"""The processes of one run: a single process, or DDP/FSDP ranks under torchrun.

Everything else in training asks only this: which rank am I, how many are there, which device, and how is
the trained module wrapped. The DDP/FSDP choice is made here and in :mod:`.optimisation`, nowhere else.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from fusionframes.training.config import TrainConfig


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_world() -> World:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, device)


def sharded(cfg: TrainConfig, world: World) -> bool:
    """FSDP with more than one rank (a single process is never sharded)."""
    return cfg.parallel == "fsdp" and world.size > 1


def wrap_parallel(objective: nn.Module, cfg: TrainConfig, world: World) -> nn.Module:
    if world.size == 1:
        return objective
    if cfg.parallel == "fsdp":
        from fusionframes.training.fsdp import shard

        return shard(objective)
    from torch.nn.parallel import DistributedDataParallel

    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(objective, device_ids=ids)


def gradient_sync(model: nn.Module, micro: int, cfg: TrainConfig, world: World) -> AbstractContextManager:
    """DDP averages gradients on the last micro-batch of a step only (FSDP and one process: always)."""
    last = micro == cfg.grad_accumulation - 1
    if last or world.size == 1 or cfg.parallel == "fsdp":
        return nullcontext()
    return model.no_sync()


def autocast_for(cfg: TrainConfig, device: torch.device) -> AbstractContextManager:
    if cfg.precision in ("float32",):
        return nullcontext()
    if cfg.precision == "auto":
        from fusionframes.runtime import resolve_dtype

        dtype = resolve_dtype("auto", device).dtype
        if dtype == torch.float32:
            return nullcontext()
    else:
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.precision]
    return torch.autocast(device.type, dtype=dtype)
