"""The optimizer, LR schedule and EMA of a run, built (or restored from a checkpoint) around its objective.

DDP wraps the objective after the optimizer and EMA exist; FSDP must shard first and build both on the
shards. That fork lives here, so the loop sees one ``Optimisation`` whatever the parallelism.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fusionframes.training.config import TrainConfig
from fusionframes.training.ema import warmup_ema
from fusionframes.training.state import set_rng_state
from fusionframes.training.world import World, sharded, wrap_parallel


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then a cosine decay to ``min_lr_ratio`` over ``max_steps``."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def select_trainable(objective: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Parameter groups; ``freeze_spatial``: only the U-Net's temporal layers learn; ``freeze_encoder``:
    only the MoVQ decoder learns."""
    unet_params, text_params = [], []
    for name, param in objective.named_parameters():
        if cfg.freeze_spatial and name.startswith("unet.") and "temporal" not in name:
            param.requires_grad_(False)
        if cfg.freeze_encoder and name.startswith(("movq.encoder.", "movq.quant_conv.")):
            param.requires_grad_(False)
        if not param.requires_grad:
            continue
        (text_params if name.startswith("text.") else unet_params).append(param)
    groups = [{"params": unet_params, "lr": cfg.learning_rate}]
    if text_params:
        groups.append({"params": text_params, "lr": cfg.text_learning_rate or cfg.learning_rate})
    return groups


@dataclass
class Optimisation:
    """``objective`` is the plain module (checkpoints, EMA); ``model`` the one a step calls (DDP/FSDP)."""

    objective: nn.Module
    model: nn.Module
    groups: list[dict]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: Any  # AveragedModel, or ShardedEMA under FSDP
    sharded: bool
    ema_source: nn.Module | None = None  # what the EMA averages: the objective, or a LoRA run's adapter

    def ema_into_objective(self) -> None:
        """Put the EMA weights into the objective (checkpoint export; the caller restores the raw ones)."""
        if self.ema_source is None:
            self.objective.load_state_dict(self.ema.module.state_dict())
        else:
            self.ema_source.copy_into(self.objective, self.ema.module)

    def parameters(self) -> list[nn.Parameter]:
        return [p for g in self.groups for p in g["params"]]

    def update_ema(self) -> None:
        if self.sharded:
            self.ema.update(self.objective)
        else:
            self.ema.update_parameters(self.ema_source or self.objective)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]


def _adamw(groups: list[dict], cfg: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))


def make_optimisation(
    objective: nn.Module, cfg: TrainConfig, world: World, state: dict[str, Any] | None
) -> Optimisation:
    """Optimizer, schedule and EMA for ``objective``; from ``state`` (a checkpoint's) when resuming."""
    groups = select_trainable(objective, cfg)
    ema_source = None  # LoRA averages its adapter only (LoRA is refused under FSDP)
    if sharded(cfg, world):
        from fusionframes.training.ema import ShardedEMA
        from fusionframes.training.fsdp import load_optimizer_state

        if state is not None:
            objective.load_state_dict(state["objective"])
        model = wrap_parallel(objective, cfg, world)
        groups = select_trainable(objective, cfg)
        optimizer, scheduler = _adamw(groups, cfg)
        ema: Any = ShardedEMA(objective, cfg.ema_decay)
        if state is not None:
            load_optimizer_state(objective, optimizer, state["optimizer"])
            ema.load_full(state["ema"])
    else:
        optimizer, scheduler = _adamw(groups, cfg)
        if cfg.lora_rank is not None:  # average the adapter only: no second copy of the frozen base
            from fusionframes.lora.training import TrainedParameters

            ema_source = TrainedParameters(objective)
        ema = torch.optim.swa_utils.AveragedModel(
            ema_source or objective, multi_avg_fn=warmup_ema(cfg.ema_decay), use_buffers=True
        )
        if state is not None:
            _load_objective_state(objective, state, cfg)
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
        model = wrap_parallel(objective, cfg, world)
    if state is not None:
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
    return Optimisation(
        objective, model, groups, optimizer, scheduler, ema, sharded(cfg, world), ema_source=ema_source
    )


def _load_objective_state(objective: nn.Module, state: dict[str, Any], cfg: TrainConfig) -> None:
    """A checkpoint's raw weights: all of them, or a LoRA run's adapter tensors only."""
    if cfg.lora_rank is None:
        objective.load_state_dict(state["objective"])
        return
    from fusionframes.lora.training import load_trainable_state

    load_trainable_state(objective, state["objective"], "the checkpoint")
