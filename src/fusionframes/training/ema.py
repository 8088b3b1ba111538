"""Exponential moving averages of the trained weights, with a warm-up, for plain and sharded modules."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor


def ema_decay_at(decay: float, updates: int) -> float:
    """EMA decay after ``updates`` updates: ramps up as (1 + n) / (10 + n) to ``decay``.

    A fixed 0.999 keeps 0.999**n of the random initial weights: still 37% after 1000 steps, which
    ruins the exported model of a short run.
    """
    return min(decay, (1.0 + updates) / (10.0 + updates))


def warmup_ema(decay: float):
    """``multi_avg_fn`` for ``AveragedModel``: EMA with the warm-up of :func:`ema_decay_at`."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        weight = 1.0 - ema_decay_at(decay, int(num_averaged))
        floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current, strict=True):
            if not a.is_floating_point():
                a.copy_(c)

    return update


class ShardedEMA:
    """Exponential moving average of a sharded module's state, kept as shards (DTensors).

    Same semantics and checkpoint layout as the loop's ``AveragedModel`` (``use_buffers=True``, decay
    warm-up of ``ema_decay_at``): the first update copies, later ones move ``1 - decay_n`` of the way.
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
                shadow.lerp_(value.detach(), 1.0 - ema_decay_at(self.decay, self.n_averaged))
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
