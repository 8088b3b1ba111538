"""Where keyframe sampling starts for a model folder with a layout prior.

The prior's layout for the caption (the keyframe latents it implies) is what keyframe sampling starts
from, noised like an image-to-image redraw to the level of the last ``layout_prior_strength`` share of
the steps, so the U-Net refines where things are instead of picking it from the noise. This module
makes that layout at the size and keyframe count of the video asked for; the pipeline calls
:func:`keyframe_start` and nothing else of the prior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fusionframes.layout_prior.model import LayoutPrior, one_hot_labels, tracks_from_logits


@torch.no_grad()
def keyframe_start(
    prior: LayoutPrior | None,
    context: torch.Tensor,
    mask: torch.Tensor,
    num_frames: int,
    latent_shape: tuple[int, int, int],
) -> torch.Tensor | None:
    """The layout ``[num_frames, C, h, w]`` of one video (``context`` ``[1, L, D]``, the projected
    prompt) to start keyframe sampling from; None without a prior (start from pure noise).

    The prior is fitted at one size and keyframe count; a video of another size or count gets its
    layout resampled in space (bilinear) and time (linear between keyframes), which keeps where each
    object is along its path."""
    if prior is None:
        return None
    _check_channels(prior, latent_shape)
    return _resample(prior(context[:1].float(), mask[:1])[0].float(), num_frames, latent_shape)


def _check_channels(prior: LayoutPrior, latent_shape: tuple[int, int, int]) -> None:
    if latent_shape[0] != prior.config.latent_channels:
        raise ValueError(
            f"latent_shape: {latent_shape[0]} channels, but the layout prior makes "
            f"{prior.config.latent_channels}"
        )


def _resample(frames: torch.Tensor, num_frames: int, latent_shape: tuple[int, int, int]) -> torch.Tensor:
    """A layout ``[F, C, h, w]`` at the prior's size and count -> ``num_frames`` at ``latent_shape``."""
    _, height, width = latent_shape
    if frames.shape[-2:] != (height, width):
        frames = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False)
    return resample_in_time(frames, num_frames).contiguous()


def resample_in_time(values: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``values`` ``[F, ...]`` (per keyframe) at ``num_frames`` keyframes, linear between them, the first
    and last kept; returned as is when the count already matches."""
    if values.shape[0] == num_frames:
        return values
    rest = values.shape[1:]
    flat = values.reshape(values.shape[0], -1).T[None]  # [1, N, F]
    flat = F.interpolate(flat, size=num_frames, mode="linear", align_corners=True)
    return flat[0].T.reshape(num_frames, *rest)


@dataclass(frozen=True)
class SeenObject:
    """An object found in a first frame: its colour and shape names, its centre (fractions of the
    frame's width and height) and its nominal radius (a fraction of the frame's smaller side)."""

    colour: str
    shape: str
    x: float
    y: float
    radius: float


def draws_objects(prior: LayoutPrior | None) -> bool:
    """Whether ``prior`` can draw given objects (:func:`objects_start`): it has labelled object slots."""
    return prior is not None and prior.tracker is not None and bool(prior.config.object_labels)


@dataclass(frozen=True)
class ObjectPlan:
    """The prior's plan for the objects of a first frame: tracks ``[F, S, 5]`` (absent slots all zero),
    one-hot labels ``[S, L]`` and the slot each given object was put in."""

    tracks: torch.Tensor
    labels: torch.Tensor
    slots: tuple[int, ...]


@torch.no_grad()
def plan_objects(
    prior: LayoutPrior, context: torch.Tensor, mask: torch.Tensor, objects: list[SeenObject]
) -> ObjectPlan:
    """Each object of ``objects`` (up to the prior's slots) keeps the track the text gives the slot of
    its colour (or the next unused slot), shifted to start at the object's centre and scaled to start at
    its radius, and is labelled with its own colour and shape where the prior knows them.

    Why: where the prior's own reading is wrong (a shape read wrongly from the words, two objects
    swapped) the image says what is there; the text still says how things move."""
    c = prior.config
    if not draws_objects(prior):
        raise ValueError("objects: this layout prior has no labelled object slots")
    raw, label_logits = prior.object_logits(context[:1].float(), mask[:1])
    predicted = one_hot_labels(label_logits, c.object_labels)[0]  # [S, L]
    tracks = tracks_from_logits(raw)[0].clone()  # [F, S, 5]
    names = list(c.object_labels)
    colour_of = [
        next(
            (n.split(":", 1)[1] for n, v in zip(names, row, strict=True) if v and n.startswith("colour:")),
            None,
        )
        for row in predicted.tolist()
    ]
    out_tracks = torch.zeros_like(tracks)
    labels = torch.zeros_like(predicted)
    free, slots = list(range(c.object_slots)), []
    for obj in objects[: c.object_slots]:
        slot = next((s for s in free if colour_of[s] == obj.colour), free[0])
        free.remove(slot)
        slots.append(slot)
        track = tracks[:, slot]
        start = torch.tensor([obj.x * 2 - 1, obj.y * 2 - 1, math.log(max(obj.radius, 1e-3) * 2)])
        moved = track.clone()
        moved[:, 0] = 1.0
        moved[:, 1:4] = track[:, 1:4] - track[:1, 1:4] + start.to(track.dtype)
        out_tracks[:, slot] = moved
        labels[slot] = predicted[slot]
        for key, value in (("colour", obj.colour), ("shape", obj.shape)):
            if f"{key}:{value}" in names:
                group = [i for i, n in enumerate(names) if n.startswith(f"{key}:")]
                labels[slot, group] = 0.0
                labels[slot, names.index(f"{key}:{value}")] = 1.0
    return ObjectPlan(out_tracks, labels, tuple(slots))


@torch.no_grad()
def objects_start(
    prior: LayoutPrior,
    context: torch.Tensor,
    mask: torch.Tensor,
    num_frames: int,
    latent_shape: tuple[int, int, int],
    objects: list[SeenObject],
) -> torch.Tensor:
    """The prior's layout for the prompt with its objects taken from a first frame
    (:func:`plan_objects`), drawn by the prior's sprites."""
    _check_channels(prior, latent_shape)
    plan = plan_objects(prior, context, mask, objects)
    drawn = prior.draw(context[:1].float(), mask[:1], plan.tracks[None], plan.labels[None])[0].float()
    return _resample(drawn, num_frames, latent_shape)
