"""One object per training stage: what it trains, how a step's batch is drawn, and its loss.

A stage holds the objective module (what DDP/FSDP wrap and the optimizer updates), the data it draws
from (frames for the MoVQ, cached latents for the diffusion stages) and, for the keyframe stage, the
tokenized captions. ``batch(step, indices, generator)`` draws everything random about the inputs and
``loss(model, batch, generator)`` runs the (wrapped) objective with the same generator, so one seeded
generator per micro-batch fixes the whole step.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from fusionframes.components import ModelComponents
from fusionframes.config import ModelConfig
from fusionframes.training.augment import reverse_some
from fusionframes.training.clips import Clip, cached_latents, caption_tokens, latent_frame_step
from fusionframes.training.config import TrainConfig
from fusionframes.training.objectives import (
    InterpolationObjective,
    KeyframeObjective,
    MoVQObjective,
    TextEncoding,
    keyframe_options,
)
from fusionframes.training.setup import load_text_encoder
from fusionframes.training.world import World

logger = logging.getLogger(__name__)


def movq_batch(clips: list[Clip], idx: list[int], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """One random frame of each clip ``[B, 3, H, W]``."""
    frames = []
    for i in idx:
        video = clips[i]["video"]
        frames.append(video[int(torch.randint(0, video.shape[0], (1,), generator=gen))])
    return torch.stack(frames).to(device, torch.float32)


def keyframe_batch(
    latents: list[torch.Tensor], idx: list[int], cfg: TrainConfig, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``[B, F, C, h, w]`` keyframe windows; ``latents`` hold every ``keyframe_stride``-th frame."""
    out = []
    for i in idx:
        lat = latents[i]
        start = int(torch.randint(0, lat.shape[0] - cfg.num_keyframes + 1, (1,), generator=gen))
        out.append(lat[start : start + cfg.num_keyframes])
    return torch.stack(out).to(device, torch.float32)


def interpolation_batch(
    latents: list[torch.Tensor],
    idx: list[int],
    stride: int,
    cfg: TrainConfig,
    gen: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """``[B, G, 5, C, h, w]``: G consecutive (left, 3 middle, right) groups at ``stride`` per clip."""
    length = min(lat.shape[0] for lat in (latents[i] for i in idx))
    groups = min(cfg.num_keyframes - 1, (length - 1) // (4 * stride))
    if groups < 1:
        raise ValueError(f"clip_frames: clips of {length} frames are too short for stride {stride}")
    span = 4 * stride * groups + 1
    out = []
    for i in idx:
        lat = latents[i]
        start = int(torch.randint(0, lat.shape[0] - span + 1, (1,), generator=gen))
        frames = lat[start : start + span : stride]  # 4G + 1 frames
        out.append(torch.stack([frames[4 * k : 4 * k + 5] for k in range(groups)]))
    return torch.stack(out).to(device, torch.float32)


@dataclass
class Stage:
    """What every stage has; subclasses add their data and define ``batch`` and ``loss``."""

    trained: ClassVar[tuple[str, ...]]  # the ModelComponents networks this stage trains

    cfg: TrainConfig
    objective: nn.Module
    device: torch.device
    num_clips: int
    tokenizer: Any = None

    def batch(self, step: int, idx: list[int], gen: torch.Generator) -> tuple:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: tuple, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def exported_config(self, config: ModelConfig) -> ModelConfig:
        """The model config an exported folder records: sampled at the size this run trained on (when the
        pipeline can generate at that size; tiny test runs below its minimum keep the preset's)."""
        from fusionframes.pipelines.text_to_video import MAX_SIZE, MIN_SIZE

        size = self.cfg.size
        if not MIN_SIZE <= size <= MAX_SIZE or size % config.pixel_multiple:
            return config
        sampling = dataclasses.replace(config.sampling, width=size, height=size)
        return dataclasses.replace(config, sampling=sampling)


@dataclass
class MoVQStage(Stage):
    trained: ClassVar[tuple[str, ...]] = ("movq",)
    clips: list[Clip] = field(default_factory=list)

    def batch(self, step: int, idx: list[int], gen: torch.Generator) -> tuple:
        return (movq_batch(self.clips, idx, gen, self.device),)

    def loss(self, model: nn.Module, batch: tuple, gen: torch.Generator) -> torch.Tensor:
        return model(batch[0], gen)


@dataclass
class KeyframeStage(Stage):
    """Keyframe windows of the latents; with ``time_reversal``, some played backwards under the
    reversed caption (``tokens`` rows n..2n-1 are the reversed captions of clips 0..n-1)."""

    trained: ClassVar[tuple[str, ...]] = ("keyframe_unet", "projection")
    latents: list[torch.Tensor] = field(default_factory=list)
    tokens: tuple[torch.Tensor, torch.Tensor] = field(
        default_factory=lambda: (torch.empty(0), torch.empty(0))
    )

    def batch(self, step: int, idx: list[int], gen: torch.Generator) -> tuple:
        latents = keyframe_batch(self.latents, idx, self.cfg, gen, self.device)
        text = tuple(t[idx] for t in self.tokens)
        if self.cfg.time_reversal:
            flip = torch.rand(len(idx), generator=gen) < self.cfg.time_reversal
            reversed_text = tuple(t[[i + self.num_clips for i in idx]] for t in self.tokens)
            latents, text = reverse_some(latents, text, reversed_text, flip.to(latents.device))
        ids, mask = text
        return latents, ids.to(self.device), mask.to(self.device)

    def loss(self, model: nn.Module, batch: tuple, gen: torch.Generator) -> torch.Tensor:
        latents, ids, mask = batch
        return model(latents, ids, mask, gen)

    def exported_config(self, config: ModelConfig) -> ModelConfig:
        """Also the keyframe count this run trained with (the pipeline's default number of keyframes)."""
        config = super().exported_config(config)
        unet = dataclasses.replace(config.keyframe_unet, num_frames=self.cfg.num_keyframes)
        return dataclasses.replace(config, keyframe_unet=unet)


@dataclass
class InterpolationStage(Stage):
    """(left, 3 middle, right) groups; the skip code cycles through ``interpolation_strides`` by step."""

    trained: ClassVar[tuple[str, ...]] = ("interpolation_unet",)
    latents: list[torch.Tensor] = field(default_factory=list)

    def batch(self, step: int, idx: list[int], gen: torch.Generator) -> tuple:
        strides = {int(k): int(v) for k, v in self.cfg.interpolation_strides.items()}
        codes = sorted(strides)
        code = codes[step % len(codes)]
        return interpolation_batch(self.latents, idx, strides[code], self.cfg, gen, self.device), code

    def loss(self, model: nn.Module, batch: tuple, gen: torch.Generator) -> torch.Tensor:
        groups, code = batch
        return model(groups, code, gen)


STAGES: dict[str, type[Stage]] = {
    "movq": MoVQStage,
    "keyframes": KeyframeStage,
    "interpolation": InterpolationStage,
}


def build_objective(cfg: TrainConfig, components: ModelComponents) -> tuple[nn.Module, Any]:
    """The trained module for the stage (and the tokenizer for the keyframe stage).

    Loaded components come frozen (inference mode); only what this stage trains is unfrozen here. A LoRA
    run (``lora_rank``) then freezes all of it again and adds the adapter, the only thing it trains.
    """
    objective, tokenizer = _stage_objective(cfg, components)
    if cfg.lora_rank is not None:
        from fusionframes.lora.training import attach_training_adapter

        attach_training_adapter(objective, cfg)
    return objective, tokenizer


def _stage_objective(cfg: TrainConfig, components: ModelComponents) -> tuple[nn.Module, Any]:
    from fusionframes.training.stages11 import build_objective11, stage_class11

    for module in components.networks().values():
        module.requires_grad_(False)
    for name in (stage_class11(cfg) or STAGES[cfg.stage]).trained:
        getattr(components, name).requires_grad_(True)
    if cfg.video_decoder:
        return build_objective11(cfg, components, None), None
    if cfg.stage == "movq":
        return MoVQObjective(components.movq, cfg.movq_latent_weight, cfg.movq_object_weight), None
    if cfg.stage == "interpolation":
        return InterpolationObjective(
            components.interpolation_unet,
            components.interpolation_null,
            cfg.diffusion_steps,
            cfg.keyframe_dropout,
            cfg.interpolation_residual,
            cfg.interpolation_prediction,
        ), None
    tokenizer, encoder = load_text_encoder(components)
    encoder.requires_grad_(cfg.train_text_encoder and cfg.text_encoder is None)
    text = TextEncoding(encoder, components.projection, components.keyframe_null)
    if cfg.first_frame_condition:
        return build_objective11(cfg, components, text), tokenizer
    return KeyframeObjective(components.keyframe_unet, text, **keyframe_options(cfg)), tokenizer


@dataclass(frozen=True)
class StageSetup:
    """Where a stage keeps what it computes once per run (this rank's latent cache) and what it shows."""

    run_dir: Path
    world: World
    progress: bool

    @property
    def latent_cache(self) -> Path:
        return self.run_dir / f"latents-rank{self.world.rank}.safetensors"


def build_stage(cfg: TrainConfig, components: ModelComponents, clips: list[Clip], setup: StageSetup) -> Stage:
    """The stage object: its objective on the device, and its data (latents are encoded or read from the
    cache once; the diffusion stages then free the frames)."""
    from fusionframes.training.stages11 import ImageKeyframeStage, VideoDecoderStage

    objective, tokenizer = build_objective(cfg, components)
    device = setup.world.device
    objective.to(device).train()
    if cfg.lora_rank is not None:  # a frozen text encoder runs as at inference: no dropout draws
        getattr(getattr(objective, "text", None), "encoder", nn.Identity()).eval()
    if cfg.gradient_checkpointing and hasattr(objective, "unet"):
        objective.unet.gradient_checkpointing = True
    common = {"cfg": cfg, "objective": objective, "device": device, "num_clips": len(clips)}
    if cfg.video_decoder:
        return VideoDecoderStage(**common, clips=clips)
    if cfg.stage == "movq":
        return MoVQStage(**common, clips=clips)
    movq = components.movq.to(device)
    show = setup.world.is_main and setup.progress
    latents = cached_latents(setup.latent_cache, movq, clips, device, show, latent_frame_step(cfg))
    components.movq.cpu()
    for clip in clips:  # the diffusion stages train on latents only; free the frames
        del clip["video"]
    if cfg.stage == "interpolation":
        return InterpolationStage(**common, latents=latents)
    captions = [c["caption"] for c in clips]
    tokens = caption_tokens(tokenizer, captions, components.config.text.max_length, cfg.time_reversal > 0)
    kind = ImageKeyframeStage if cfg.first_frame_condition else KeyframeStage
    return kind(**common, tokenizer=tokenizer, latents=latents, tokens=tokens)
