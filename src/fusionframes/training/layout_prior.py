"""Train a text-to-layout prior for a finished model and write the model folder with it.

The prior (:mod:`fusionframes.models.layout_prior`) is a regression from the pooled caption to the
keyframe latents, so it trains in minutes on a CPU against the model's own MoVQ latents and text
encoder; the U-Nets are untouched.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fusionframes.components import ModelComponents
from fusionframes.config import (
    LayoutPriorConfig,
    SamplingDefaults,
    check_layout_prior_blur,
    check_layout_prior_channels,
    check_layout_prior_strength,
)
from fusionframes.io.checkpoints import (
    load_model_folder,
    read_manifest,
    text_encoder_source,
    write_model_folder,
)
from fusionframes.models.layout_prior import LayoutPrior, pooled_text
from fusionframes.training.config import _Checker

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PriorTraining:
    """How the prior is fitted. ``foreground_weight``: extra loss weight where a latent differs from
    its clip's temporal median by more than ``foreground_threshold`` (where objects are, not the
    background): the words that place objects change little of each frame, and an unweighted regression
    settles on the mean over every direction instead."""

    steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    hidden_dim: int = 256
    channels: tuple[int, ...] = (96, 64, 32)
    foreground_weight: float = 50.0
    foreground_threshold: float = 0.2
    keyframe_stride: int = 4
    holdout: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        check = _Checker()
        for name in ("steps", "batch_size", "hidden_dim", "keyframe_stride"):
            check.positive(name, getattr(self, name))
        if isinstance(self.holdout, bool) or not isinstance(self.holdout, int) or self.holdout < 0:
            raise ValueError(f"holdout: must be an integer >= 0, got {self.holdout!r}")
        for name in ("learning_rate", "weight_decay", "foreground_weight", "foreground_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate: must be > 0, got {self.learning_rate!r}")
        check_layout_prior_channels(self.channels, "channels")


def foreground_weights(latents: torch.Tensor, weight: float, threshold: float) -> torch.Tensor:
    """Loss weights ``[N, F, 1, h, w]`` for latents ``[N, F, C, h, w]``: 1, plus ``weight`` where the
    frame differs from the clip's per-position temporal median (a moving or changing object)."""
    median = latents.median(dim=1, keepdim=True).values
    changed = (latents - median).abs().mean(dim=2, keepdim=True) > threshold
    return 1.0 + weight * changed.float()


@torch.no_grad()
def caption_features(components: ModelComponents, captions: list[str], batch: int = 256) -> torch.Tensor:
    """Pooled projected text of every caption ``[N, D]``, as the pipeline computes it for a prompt."""
    from fusionframes.text.conditioning import TextConditioner

    text = TextConditioner.from_pretrained(
        components.text_encoder, components.projection, components.config.text.max_length
    )
    pooled = []
    for start in range(0, len(captions), batch):
        context, mask = text(captions[start : start + batch])
        pooled.append(pooled_text(context.float(), mask))
    return torch.cat(pooled)


def fit_layout_prior(
    features: torch.Tensor, latents: torch.Tensor, settings: PriorTraining, progress: bool = True
) -> tuple[LayoutPrior, dict]:
    """Fit a prior to pooled caption ``features`` ``[N, D]`` and keyframe ``latents`` ``[N, F, C, h, w]``.

    The last ``settings.holdout`` clips are kept out of training and scored (weighted and plain MSE), so
    the report says whether the prior generalises to captions it did not see.
    """
    n = latents.shape[0]
    if features.shape[0] != n:
        raise ValueError(f"features: {features.shape[0]} rows for {n} clips")
    holdout = settings.holdout if n - settings.holdout >= 1 else 0
    train_n = n - holdout
    _, frames, channels, height, width = latents.shape
    config = LayoutPriorConfig(
        context_dim=features.shape[1],
        hidden_dim=settings.hidden_dim,
        channels=tuple(settings.channels),
        num_frames=frames,
        latent_channels=channels,
        latent_height=height,
        latent_width=width,
    )
    torch.manual_seed(settings.seed)
    prior = LayoutPrior(config)
    prior.in_mean.copy_(features[:train_n].mean(0))
    if train_n > 1:
        prior.in_std.copy_(features[:train_n].std(0).clamp(min=1e-6))
    inputs = prior.standardise(features)
    weights = foreground_weights(latents, settings.foreground_weight, settings.foreground_threshold)
    optimizer = torch.optim.AdamW(
        prior.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    warmup = max(1, settings.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / settings.steps)),
    )
    generator = torch.Generator().manual_seed(settings.seed)
    losses = []
    start = time.perf_counter()
    for _ in tqdm(range(settings.steps), desc="layout prior", disable=not progress, leave=False):
        idx = torch.randint(0, train_n, (min(settings.batch_size, train_n),), generator=generator)
        pred = prior.decode(inputs[idx])
        loss = (weights[idx] * (pred - latents[idx]) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    prior.eval().requires_grad_(False)
    report = {
        "clips": n,
        "steps": settings.steps,
        "seconds": round(time.perf_counter() - start, 1),
        "loss_first_100": round(sum(losses[:100]) / len(losses[:100]), 5),
        "loss_last_100": round(sum(losses[-100:]) / len(losses[-100:]), 5),
    }
    if holdout:
        with torch.no_grad():
            pred = torch.cat([prior.decode(chunk) for chunk in inputs[train_n:].split(64)])
            err = (pred - latents[train_n:]) ** 2
            mean_err = (latents[train_n:] - latents[:train_n].mean(0)) ** 2
            report.update(
                holdout_clips=holdout,
                holdout_mse=round(err.mean().item(), 5),
                holdout_mse_of_mean=round(mean_err.mean().item(), 5),
                holdout_weighted_mse=round((weights[train_n:] * err).mean().item(), 5),
            )
    return prior, report


def keyframe_latents(
    components: ModelComponents, data: str | Path, stride: int, cache: Path | None, progress: bool
) -> tuple[torch.Tensor, list[str]]:
    """MoVQ latents of every clip's keyframes ``[N, F, C, h, w]`` (F = the keyframe U-Net's frames) and
    the captions; cached in ``cache`` for this MoVQ and these clips."""
    from fusionframes.training.data import make_dataset
    from fusionframes.training.loop import cached_latents, encode_clips

    frames = components.config.keyframe_unet.num_frames or 8
    size = (components.config.sampling.height, components.config.sampling.width)
    dataset = make_dataset(data, num_frames=(frames - 1) * stride + 1, size=size)
    clips = [{"video": item["video"].to(torch.float16), "caption": item["caption"]} for item in dataset]
    if not clips:
        raise ValueError(f"data: no usable clips in {data}")
    movq = components.movq.float()
    if cache is not None:
        latents = cached_latents(cache, movq, clips, torch.device("cpu"), progress, stride)
    else:
        latents = encode_clips(movq, clips, torch.device("cpu"), progress, stride)
    return torch.stack([lat.float() for lat in latents]), [c["caption"] for c in clips]


def add_layout_prior(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    settings: PriorTraining | None = None,
    strength: float = 0.6,
    weights_dtype: torch.dtype = torch.float32,
    blur: float = 0.0,
    cache: str | Path | None = None,
    progress: bool = True,
) -> tuple[Path, dict]:
    """Fit a layout prior for the model folder ``model`` on ``data`` and write ``model`` plus the prior
    to ``out``, with ``strength`` and ``blur`` as its ``layout_prior_strength`` and ``layout_prior_blur``."""
    settings = settings or PriorTraining()
    strength = check_layout_prior_strength(strength, "strength")
    blur = check_layout_prior_blur(blur, "blur")
    components = load_model_folder(model)
    factor, sampling = components.config.movq.scale_factor, components.config.sampling
    LayoutPriorConfig(  # the decoder's levels must fit the latent size: say so before minutes of encoding
        channels=tuple(settings.channels),
        latent_height=sampling.height // factor,
        latent_width=sampling.width // factor,
    )
    latents, captions = keyframe_latents(
        components, data, settings.keyframe_stride, Path(cache) if cache else None, progress
    )
    features = caption_features(components, captions)
    prior, report = fit_layout_prior(features, latents, settings, progress)
    logger.info("layout prior: %s", report)
    replaced = components.layout_prior  # a model may already carry one; the new one takes its place
    components.layout_prior = prior
    sampling = SamplingDefaults.from_dict(
        {
            **components.config.sampling.to_dict(),
            "layout_prior_strength": strength,
            "layout_prior_blur": blur,
        }
    )
    components.config = dataclasses.replace(components.config, layout_prior=prior.config, sampling=sampling)
    manifest = read_manifest(model)
    text_dir = Path(str(text_encoder_source(model, manifest)))
    keep = {k: v for k, v in manifest.items() if k.startswith("trained_") or k == "description"}
    added = sum(p.numel() for p in prior.parameters())
    if replaced is not None:
        added -= sum(p.numel() for p in replaced.parameters())
    if "parameters" in manifest:
        keep["parameters"] = manifest["parameters"] + added
    keep["layout_prior_training"] = {**dataclasses.asdict(settings), **report}
    path = write_model_folder(
        components,
        out,
        text_encoder_dir=text_dir if text_dir.is_dir() else None,
        metadata=keep,
        weights_dtype=weights_dtype,
    )
    return path, report
