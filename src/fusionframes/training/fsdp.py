"""FSDP pieces of the training loop: sharding, a sharded EMA, and full tensors for checkpoints.

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
from torch.distributed.tensor import DTensor, distribute_tensor

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


class ShardedEMA:
    """Exponential moving average of a sharded module's state, kept as shards (DTensors).

    Same semantics and checkpoint layout as ``AveragedModel`` with ``get_ema_multi_avg_fn`` and
    ``use_buffers=True``: the first update copies, later ones move ``1 - decay`` of the way.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.n_averaged = 0
        self.shadow = {name: value.detach().clone() for name, value in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for name, value in module.state_dict().items():
            shadow = self.shadow[name]
            if self.n_averaged == 0 or not shadow.is_floating_point():
                shadow.copy_(value.detach())
            else:
                shadow.lerp_(value.detach(), 1.0 - self.decay)
        self.n_averaged += 1

    def full_state(self) -> dict[str, torch.Tensor]:
        """Collective: every rank must call it. Keys as in ``AveragedModel.state_dict()``."""
        state = {
            f"module.{name}": (value.full_tensor() if isinstance(value, DTensor) else value).cpu()
            for name, value in self.shadow.items()
        }
        state["n_averaged"] = torch.tensor(self.n_averaged, dtype=torch.long)
        return state

    @torch.no_grad()
    def load_full(self, state: dict[str, torch.Tensor]) -> None:
        for name, shadow in self.shadow.items():
            full = state[f"module.{name}"]
            if isinstance(shadow, DTensor):
                full = full.to(shadow.device_mesh.device_type, shadow.dtype)
                shadow.copy_(distribute_tensor(full, shadow.device_mesh, shadow.placements))
            else:
                shadow.copy_(full)
        self.n_averaged = int(state["n_averaged"])


def full_model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Collective; rank 0 gets full CPU tensors, the other ranks an empty dict."""
    return get_model_state_dict(module, options=GATHER)


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective; parameter names (not indices) key the state, so it reloads onto any sharding."""
    return get_optimizer_state_dict(module, optimizer, options=GATHER)


def load_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    set_optimizer_state_dict(module, optimizer, optim_state_dict=state, options=FULL_INPUT)
