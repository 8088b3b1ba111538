"""LoRA runs of the keyframe and interpolation stages: what is attached, averaged, checkpointed, exported.

A LoRA run is a normal run of its stage (same data, objective, seeded steps, DDP, resume) whose trained
parameters are only the adapter's. So its checkpoints hold only adapter tensors (plus their EMA and
optimizer state), its exported artifact is an adapter folder (``checkpoints/step-N/adapter`` and, at the
end, ``run_dir/adapter``), and a resumed run rebuilds the base network from ``init_from``, checks it is
the one the adapter was started on (its hash), and puts the adapter tensors back in place.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from fusionframes.lora.files import read_adapter, save_adapter
from fusionframes.lora.layers import LoraSpec, attach, lora_config, resolve_targets, weights_hash
from fusionframes.training.config import TrainConfig

TRAINING_ADAPTER = "default"
COMPONENT_OF_STAGE = {"keyframes": "keyframe_unet", "interpolation": "interpolation_unet"}


def lora_spec(cfg: TrainConfig) -> LoraSpec:
    rank = int(cfg.lora_rank or 0)
    return LoraSpec(rank, float(cfg.lora_alpha if cfg.lora_alpha is not None else rank), cfg.lora_targets)


def attach_training_adapter(objective: nn.Module, cfg: TrainConfig) -> None:
    """Freeze the whole objective (U-Net, text encoder, projection, null embeddings) and add a fresh
    adapter to its U-Net; only the adapter's tensors then require gradients. The adapter's update starts
    as zero (peft's B = 0), so step 0 computes exactly the base model's loss; its A is drawn from
    ``cfg.seed``, so every run of one config starts from the same adapter."""
    unet = objective.unet
    names = resolve_targets(unet, cfg.lora_targets)  # before any work: a bad pattern lists the layers
    objective.lora_base_hash = weights_hash(unet)  # type: ignore[assignment]
    for param in objective.parameters():
        param.requires_grad_(False)
    # peft draws lora_A (Kaiming-uniform) from the global generator, which nothing seeds for a run that
    # starts from a model folder: seed it from the run's seed, so an interrupted run and the uninterrupted
    # one start from the same adapter (and resume replays its losses), without disturbing the generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        attach(unet, lora_config(lora_spec(cfg), names), TRAINING_ADAPTER)


def trainable_state(objective: nn.Module) -> dict[str, torch.Tensor]:
    """The objective's trained tensors (the adapter's), cloned: what a LoRA checkpoint stores."""
    return {n: p.detach().clone() for n, p in objective.named_parameters() if p.requires_grad}


def load_trainable_state(objective: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Put a checkpoint's adapter tensors back; anything but exactly the adapter's names is an error."""
    expected = {n for n, p in objective.named_parameters() if p.requires_grad}
    if set(state) != expected:
        extra, missing = sorted(set(state) - expected), sorted(expected - set(state))
        raise ValueError(
            f"resume: {where} does not hold this run's adapter (unexpected {extra[:3]}, missing "
            f"{missing[:3]}); was lora_rank or lora_targets changed?"
        )
    params = dict(objective.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


class TrainedParameters(nn.Module):
    """The objective's trained parameters (the same tensors) under one module, so the EMA averages and
    copies only the adapter, not the frozen base network."""

    def __init__(self, objective: nn.Module) -> None:
        super().__init__()
        self.names = [n for n, p in objective.named_parameters() if p.requires_grad]
        by_name = dict(objective.named_parameters())
        self.params = nn.ParameterList([by_name[n] for n in self.names])

    @torch.no_grad()
    def copy_into(self, objective: nn.Module, source: nn.Module) -> None:
        """Write ``source``'s (an averaged copy of this module) values into the objective's tensors."""
        params = dict(objective.named_parameters())
        for name, value in zip(self.names, source.params, strict=True):
            params[name].copy_(value)


def export_adapter(objective: nn.Module, cfg: TrainConfig, model_name: str, path: Path, extra: dict) -> None:
    """Write the run's adapter (the objective's current adapter tensors) as an adapter folder."""
    save_adapter(
        objective.unet,
        TRAINING_ADAPTER,
        path,
        component=COMPONENT_OF_STAGE[cfg.stage],
        base_model=model_name,
        base_hash=str(objective.lora_base_hash),
        extra={
            "targets": cfg.lora_targets,
            "trainable_parameters": int(sum(p.numel() for p in objective.parameters() if p.requires_grad)),
            "written_unix": round(time.time()),
            **extra,
        },
    )


def check_resumed_base(objective: nn.Module, checkpoint: Path) -> None:
    """A resumed LoRA run rebuilds its base from init_from: it must be the base the adapter started on."""
    adapter = read_adapter(checkpoint / "adapter")
    if adapter.base_hash != objective.lora_base_hash:
        raise ValueError(
            f"resume: {checkpoint / 'adapter'} was trained on base weights {adapter.base_hash[:19]}..., "
            f"but init_from now holds {str(objective.lora_base_hash)[:19]}...; give the original base model"
        )
