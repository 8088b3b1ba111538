"""FSDP pieces of the training loop: sharding, and full tensors for checkpoints (EMA: ``ema.py``).

DDP keeps a whole replica per rank; FSDP (PyTorch's ``fully_shard``) splits parameters, gradients and
optimizer state across ranks, which is what lets the released 4B U-Nets train on several GPUs. Three
things differ from DDP: the optimizer must be built on the sharded parameters, the EMA must hold shards
too (a full copy per rank would defeat the sharding), and a checkpoint gathers full tensors first so
that it has the same layout as a single-process one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)  # full tensors on rank 0 only
FULL_INPUT = StateDictOptions(full_state_dict=True)  # every rank passes the full state it read


def shard(objective: nn.Module) -> nn.Module:
    """``fully_shard`` each U-Net level, then the rest; the module is changed in place."""
    from torch.distributed.fsdp import fully_shard

    unet = getattr(objective, "unet", None)
    if unet is not None:
        for level in [*unet.down_samples, *unet.up_samples]:
            fully_shard(level)
    fully_shard(objective)
    return objective


def full_model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Collective; rank 0 gets full CPU tensors, the other ranks an empty dict."""
    return get_model_state_dict(module, options=GATHER)


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective; parameter names (not indices) key the state, so it reloads onto any sharding."""
    return get_optimizer_state_dict(module, optimizer, options=GATHER)


def load_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    set_optimizer_state_dict(module, optimizer, optim_state_dict=state, options=FULL_INPUT)
