"""Train a text-to-layout prior for a finished model and write the model folder with it.

The prior (:mod:`fusionframes.layout_prior.model`) is a regression from the caption to the keyframe
latents, so it trains in minutes on a CPU against the model's own MoVQ latents and text encoder; the
U-Nets are untouched. With object slots it has two parts fitted apart: the decoder learns to draw each
clip along its true object tracks, and the track predictor learns the tracks from the caption.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fusionframes.components import ModelComponents
from fusionframes.config import SamplingDefaults, check_layout_prior_strength
from fusionframes.io.checkpoints import (
    load_model_folder,
    read_manifest,
    text_encoder_source,
    write_model_folder,
)
from fusionframes.layout_prior.config import LayoutPriorConfig, check_layout_prior_channels
from fusionframes.layout_prior.model import (
    TRACK_FIELDS,
    LayoutPrior,
    label_groups,
    one_hot_labels,
    pooled_text,
)
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
    object_slots: int = 0
    object_label_keys: tuple[str, ...] = ()
    track_steps: int = 4000
    track_batch_size: int = 128

    def __post_init__(self) -> None:
        check = _Checker()
        for name in (
            "steps",
            "batch_size",
            "hidden_dim",
            "keyframe_stride",
            "track_steps",
            "track_batch_size",
        ):
            check.positive(name, getattr(self, name))
        slots = self.object_slots
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
            raise ValueError(f"object_slots: must be an integer >= 0, got {slots!r}")
        keys = self.object_label_keys
        if not isinstance(keys, tuple) or not all(isinstance(k, str) and k and ":" not in k for k in keys):
            raise ValueError(f"object_label_keys: must be a tuple of names without ':', got {keys!r}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"object_label_keys: names must be distinct, got {keys!r}")
        if keys and not slots:
            raise ValueError("object_label_keys: label objects only with object_slots >= 1")
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
def caption_context(
    components: ModelComponents, captions: list[str], batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected text ``[N, L, D]`` and its mask ``[N, L]`` of every caption, as the pipeline computes it
    for a prompt (padded to the longest caption)."""
    from fusionframes.text.conditioning import TextConditioner

    text = TextConditioner.from_pretrained(
        components.text_encoder, components.projection, components.config.text.max_length
    )
    contexts, masks = [], []
    for start in range(0, len(captions), batch):
        context, mask = text(captions[start : start + batch])
        contexts.append(context.float())
        masks.append(mask.bool())
    length = max(c.shape[1] for c in contexts)
    context = torch.cat([F.pad(c, (0, 0, 0, length - c.shape[1])) for c in contexts])
    mask = torch.cat([F.pad(m, (0, length - m.shape[1])) for m in masks])
    return context, mask


def keyframe_tracks(metas: list[dict], frames: int, stride: int, slots: int) -> torch.Tensor:
    """Object tracks ``[N, F, S, 5]`` of every clip's keyframes from the synthetic world's ground truth
    (``meta["tracks"]``, :func:`fusionframes.training.synth.ground_truth`), in the prior's units: centres
    in [-1, 1], log radius as a fraction of half the frame, angle in radians; objects past ``slots`` are
    left out."""
    tracks = torch.zeros(len(metas), frames, slots, TRACK_FIELDS)
    for n, meta in enumerate(metas):
        if "tracks" not in meta or "size" not in meta:
            raise ValueError(
                f"data: clip {n} ({meta.get('key', '?')}) has no object tracks; object_slots needs data "
                "that carries them (fusionframes data synth writes them), or use object_slots 0"
            )
        size, picked = meta["size"], meta.get("frame_indices")
        for slot, track in enumerate(meta["tracks"][:slots]):
            for f in range(frames):
                frame = picked[f * stride] if picked else f * stride
                row = track["frames"][frame]
                cx, cy = row["centroid"]
                tracks[n, f, slot] = torch.tensor(
                    [
                        1.0,
                        cx / size * 2 - 1,
                        cy / size * 2 - 1,
                        math.log(max(row["radius"], 1e-3) / size * 2),
                        math.radians(row["angle"]),
                    ]
                )
    return tracks


def keyframe_labels(
    metas: list[dict], slots: int, keys: tuple[str, ...]
) -> tuple[tuple[str, ...], torch.Tensor]:
    """Every value the clips' objects take for each of ``keys`` (``meta["tracks"][i][key]``, as
    "key:value", sorted within a key) and each clip's slots one-hot ``[N, S, L]`` (absent slots zero)."""
    values: dict[str, set[str]] = {key: set() for key in keys}
    for n, meta in enumerate(metas):
        for track in meta.get("tracks", [])[:slots]:
            for key in keys:
                if key not in track:
                    raise ValueError(
                        f"data: clip {n} ({meta.get('key', '?')}) has an object without {key!r}; "
                        f"object_label_keys {list(keys)} needs every tracked object to carry them"
                    )
                values[key].add(str(track[key]))
    names = tuple(f"{key}:{value}" for key in keys for value in sorted(values[key]))
    index = {name: i for i, name in enumerate(names)}
    labels = torch.zeros(len(metas), slots, len(names))
    for n, meta in enumerate(metas):
        for slot, track in enumerate(meta.get("tracks", [])[:slots]):
            for key in keys:
                labels[n, slot, index[f"{key}:{track[key]}"]] = 1.0
    return names, labels


def label_loss(logits: torch.Tensor, labels: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """Cross-entropy of each label group's logits ``[N, S, L]`` against the one-hot ``labels`` over the
    slots that hold an object."""
    present = labels.sum(-1) > 0
    if not present.any():
        return logits.sum() * 0.0
    loss = logits.new_zeros(())
    for group in label_groups(names):
        target = labels[..., group][present].argmax(-1)
        loss = loss + F.cross_entropy(logits[..., group][present], target)
    return loss


def track_loss(logits: torch.Tensor, tracks: torch.Tensor) -> torch.Tensor:
    """Presence cross-entropy plus the squared error of centre, log radius and angle where present."""
    present = tracks[..., 0]
    presence = F.binary_cross_entropy_with_logits(logits[..., 0], present)
    error = ((logits[..., 1:] - tracks[..., 1:]) ** 2).sum(-1)
    return presence + (error * present).sum() / present.sum().clamp(min=1.0)


def _minimise(
    params: list[nn.Parameter],
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    batch_size: int,
    train_n: int,
    settings: PriorTraining,
    seed: int,
    desc: str,
    progress: bool,
) -> list[float]:
    """AdamW with warmup and cosine decay on ``batch_loss`` of random batches (indices) of the first
    ``train_n`` clips; the loss of every step."""
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        idx = torch.randint(0, train_n, (min(batch_size, train_n),), generator=generator)
        loss = batch_loss(idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def _mean(values: list[float]) -> float:
    return round(sum(values) / max(len(values), 1), 5)


def fit_layout_prior(
    context: torch.Tensor,
    mask: torch.Tensor,
    latents: torch.Tensor,
    settings: PriorTraining,
    tracks: torch.Tensor | None = None,
    progress: bool = True,
    labels: tuple[tuple[str, ...], torch.Tensor] | None = None,
) -> tuple[LayoutPrior, dict]:
    """Fit a prior to the captions' projected text ``[N, L, D]`` (mask ``[N, L]``), their keyframe
    ``latents`` ``[N, F, C, h, w]`` and, when ``settings.object_slots`` > 0, their object ``tracks``
    ``[N, F, S, 5]`` (:func:`keyframe_tracks`) and, when ``settings.object_label_keys`` is set, their
    objects' labels (names and one-hot ``[N, S, L]``, :func:`keyframe_labels`).

    The last ``settings.holdout`` clips are kept out of training and scored (weighted and plain MSE of
    the layout drawn along the predicted tracks), so the report says whether the prior generalises to
    captions it did not see.
    """
    n = latents.shape[0]
    if context.shape[0] != n or mask.shape[0] != n:
        raise ValueError(f"context: {context.shape[0]} rows and mask {mask.shape[0]} for {n} clips")
    slots = settings.object_slots
    if slots and (tracks is None or tracks.shape[:3] != (n, latents.shape[1], slots)):
        got = None if tracks is None else tuple(tracks.shape)
        raise ValueError(
            f"tracks: object_slots {slots} needs tracks [{n}, {latents.shape[1]}, {slots}, 5], got {got}"
        )
    if bool(settings.object_label_keys) != (labels is not None):
        raise ValueError("labels: needed exactly when settings.object_label_keys is set")
    names, true_labels = labels if labels is not None else ((), None)
    if true_labels is not None and true_labels.shape[:2] != (n, slots):
        raise ValueError(f"labels: need [{n}, {slots}, L] one-hot labels, got {tuple(true_labels.shape)}")
    holdout = settings.holdout if n - settings.holdout >= 1 else 0
    train_n = n - holdout
    _, frames, channels, height, width = latents.shape
    config = LayoutPriorConfig(
        context_dim=context.shape[-1],
        hidden_dim=settings.hidden_dim,
        channels=tuple(settings.channels),
        num_frames=frames,
        latent_channels=channels,
        latent_height=height,
        latent_width=width,
        object_slots=slots,
        object_labels=names,
    )
    torch.manual_seed(settings.seed)
    prior = LayoutPrior(config)
    pooled = pooled_text(context, mask)
    prior.in_mean.copy_(pooled[:train_n].mean(0))
    if train_n > 1:
        prior.in_std.copy_(pooled[:train_n].std(0).clamp(min=1e-6))
    weights = foreground_weights(latents, settings.foreground_weight, settings.foreground_threshold)
    start = time.perf_counter()
    true_tracks = tracks if slots else None

    def decoder_loss(idx: torch.Tensor) -> torch.Tensor:  # drawn along the true tracks (teacher forcing)
        pred = prior.draw(
            context[idx],
            mask[idx],
            true_tracks[idx] if true_tracks is not None else None,
            true_labels[idx] if true_labels is not None else None,
        )
        return (weights[idx] * (pred - latents[idx]) ** 2).mean()

    decoder_params = [p for name, p in prior.named_parameters() if not name.startswith("tracker.")]
    losses = _minimise(
        decoder_params,
        decoder_loss,
        settings.steps,
        settings.batch_size,
        train_n,
        settings,
        settings.seed,
        "layout prior",
        progress,
    )
    report: dict = {
        "clips": n,
        "steps": settings.steps,
        "loss_first_100": _mean(losses[:100]),
        "loss_last_100": _mean(losses[-100:]),
    }
    if slots:  # the track predictor alone: the decoder never sees its output in training
        features = prior.features(context, mask)

        def tracker_loss(idx: torch.Tensor) -> torch.Tensor:
            raw, label_logits = prior.tracker(features[idx], context[idx], mask[idx])
            loss = track_loss(raw, tracks[idx])
            if label_logits is not None:
                loss = loss + label_loss(label_logits, true_labels[idx], names)
            return loss

        track_losses = _minimise(
            list(prior.tracker.parameters()),
            tracker_loss,
            settings.track_steps,
            settings.track_batch_size,
            train_n,
            settings,
            settings.seed + 1,
            "object tracks",
            progress,
        )
        report.update(
            track_loss_first_100=_mean(track_losses[:100]), track_loss_last_100=_mean(track_losses[-100:])
        )
    report["seconds"] = round(time.perf_counter() - start, 1)
    prior.eval().requires_grad_(False)
    if holdout:
        report.update(holdout_report(prior, context, mask, latents, weights, tracks, train_n, true_labels))
    return prior, report


@torch.no_grad()
def holdout_report(
    prior: LayoutPrior,
    context: torch.Tensor,
    mask: torch.Tensor,
    latents: torch.Tensor,
    weights: torch.Tensor,
    tracks: torch.Tensor | None,
    train_n: int,
    labels: torch.Tensor | None = None,
) -> dict:
    """Errors on the clips after ``train_n``: of the layout as sampling draws it, against predicting the
    training mean, and for a tracking prior the track loss and the error drawn along the true tracks
    (and labels), and for a labelling prior the share of objects with every label right."""
    held = slice(train_n, None)
    pred = torch.cat(
        [prior(c, m) for c, m in zip(context[held].split(64), mask[held].split(64), strict=True)]
    )
    err = (pred - latents[held]) ** 2
    report = {
        "holdout_clips": latents.shape[0] - train_n,
        "holdout_mse": round(err.mean().item(), 5),
        "holdout_mse_of_mean": round(((latents[held] - latents[:train_n].mean(0)) ** 2).mean().item(), 5),
        "holdout_weighted_mse": round((weights[held] * err).mean().item(), 5),
    }
    if prior.tracker is not None and tracks is not None:
        true_labels = labels[held] if labels is not None else None
        drawn = prior.draw(context[held], mask[held], tracks[held], true_labels)
        raw, label_logits = prior.object_logits(context[held], mask[held])
        if label_logits is not None and true_labels is not None:
            present = true_labels.sum(-1) > 0
            right = (one_hot_labels(label_logits, prior.config.object_labels) == true_labels).all(-1)
            report["holdout_objects_labelled_right"] = round(right[present].float().mean().item(), 4)
        report.update(
            holdout_track_loss=round(track_loss(raw, tracks[held]).item(), 5),
            holdout_weighted_mse_true_tracks=round(
                (weights[held] * (drawn - latents[held]) ** 2).mean().item(), 5
            ),
        )
    return report


def keyframe_count(components: ModelComponents) -> int:
    """Keyframes per clip the prior is fitted to: the keyframe U-Net's frames."""
    return components.config.keyframe_unet.num_frames or 8


def read_clips(components: ModelComponents, data: str | Path, stride: int) -> list[dict]:
    """Every usable clip of ``data`` at the model's size, long enough for its keyframes ``stride`` frames
    apart: ``{"video", "caption", "meta"}``."""
    from fusionframes.training.data import make_dataset

    size = (components.config.sampling.height, components.config.sampling.width)
    dataset = make_dataset(data, num_frames=(keyframe_count(components) - 1) * stride + 1, size=size)
    clips = [
        {"video": item["video"].to(torch.float16), "caption": item["caption"], "meta": item.get("meta", {})}
        for item in dataset
    ]
    if not clips:
        raise ValueError(f"data: no usable clips in {data}")
    return clips


def keyframe_latents(
    components: ModelComponents, clips: list[dict], stride: int, cache: Path | None, progress: bool
) -> torch.Tensor:
    """MoVQ latents of every clip's keyframes ``[N, F, C, h, w]``, cached in ``cache`` for this MoVQ and
    these clips."""
    from fusionframes.training.loop import cached_latents, encode_clips

    movq = components.movq.float()
    if cache is not None:
        latents = cached_latents(cache, movq, clips, torch.device("cpu"), progress, stride)
    else:
        latents = encode_clips(movq, clips, torch.device("cpu"), progress, stride)
    return torch.stack([lat.float() for lat in latents])


def add_layout_prior(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    settings: PriorTraining | None = None,
    strength: float = 0.6,
    weights_dtype: torch.dtype = torch.float32,
    cache: str | Path | None = None,
    progress: bool = True,
) -> tuple[Path, dict]:
    """Fit a layout prior for the model folder ``model`` on ``data`` and write ``model`` plus the prior
    to ``out``, with ``strength`` as its ``layout_prior_strength``."""
    settings = settings or PriorTraining()
    strength = check_layout_prior_strength(strength, "strength")
    components = load_model_folder(model)
    factor, sampling = components.config.movq.scale_factor, components.config.sampling
    LayoutPriorConfig(  # the decoder's levels must fit the latent size: say so before minutes of encoding
        channels=tuple(settings.channels),
        latent_height=sampling.height // factor,
        latent_width=sampling.width // factor,
    )
    clips = read_clips(components, data, settings.keyframe_stride)
    tracks, labels = None, None
    if settings.object_slots:  # before minutes of encoding: does every clip carry its tracks?
        metas = [clip["meta"] for clip in clips]
        tracks = keyframe_tracks(
            metas, keyframe_count(components), settings.keyframe_stride, settings.object_slots
        )
        if settings.object_label_keys:
            labels = keyframe_labels(metas, settings.object_slots, settings.object_label_keys)
    latents = keyframe_latents(
        components, clips, settings.keyframe_stride, Path(cache) if cache else None, progress
    )
    context, mask = caption_context(components, [clip["caption"] for clip in clips])
    prior, report = fit_layout_prior(context, mask, latents, settings, tracks, progress, labels)
    logger.info("layout prior: %s", report)
    replaced = components.layout_prior  # a model may already carry one; the new one takes its place
    components.layout_prior = prior
    sampling = SamplingDefaults.from_dict(
        {
            **components.config.sampling.to_dict(),
            "layout_prior_strength": strength,
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
