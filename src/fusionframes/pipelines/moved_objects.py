"""Image-to-video keyframes started from the first frame's own objects, moved along the text's tracks.

The layout prior draws an object from its colour and shape labels with a small learned sprite; at the
built-in model's 16x16 latents that loses what makes a small star a star (its points) or a small
circle round, so an image's object drawn again by the prior can come back as another shape. This start
does not redraw it: each object the analyser finds in the image is lifted off the background as a soft
matte (its anti-aliased rim included) and moved, in pixels, by the similarity transform (shift, scale,
turn) that takes the track's first keyframe to each later one; the tracks are the prior's for the
caption, started at the object (:func:`fusionframes.layout_prior.start.plan_objects`). The moved frames
are encoded by the image MoVQ, and keyframe sampling redraws them at ``layout_prior_strength`` with the
image-to-video U-Net, as it redraws the prior's layout in text-to-video. The text says how things move;
the image says what they look like.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fusionframes.layout_prior.model import LayoutPrior
from fusionframes.layout_prior.start import SeenObject, draws_objects, plan_objects, resample_in_time
from fusionframes.models.movq import MoVQ


@dataclass(frozen=True)
class LiftedObject:
    """One object of a first frame: what the analyser saw (:class:`SeenObject`), its colour ``[3]`` in
    0..1 and its coverage ``[H, W]`` in 0..1."""

    seen: SeenObject
    rgb: torch.Tensor
    coverage: torch.Tensor


@dataclass(frozen=True)
class LiftedFrame:
    """A first frame split into its background ``[3, H, W]`` (0..1) and its objects, largest first."""

    background: torch.Tensor
    objects: tuple[LiftedObject, ...]


def lift_objects(picture: np.ndarray, seen: list[SeenObject]) -> LiftedFrame:
    """Split ``picture`` ``[H, W, 3]`` (uint8, as the video takes it) into background and the objects
    of ``seen`` (matched by colour to the analyser's mattes; an object without a matte is left out)."""
    from fusionframes.evaluation.analysis import object_mattes

    rows, mattes = object_mattes(picture)
    by_colour = {m.colour: m for m in mattes}
    height, width = picture.shape[:2]
    background = torch.from_numpy(np.ascontiguousarray(rows, np.float32) / 255.0)  # [H, 3]
    background = background.T[:, :, None].expand(3, height, width).contiguous()
    objects = tuple(
        LiftedObject(
            obj,
            torch.from_numpy(np.asarray(by_colour[obj.colour].rgb, np.float32) / 255.0),
            torch.from_numpy(by_colour[obj.colour].coverage),
        )
        for obj in seen
        if obj.colour in by_colour
    )
    return LiftedFrame(background, objects)


def resample_tracks(tracks: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Tracks ``[F, S, 5]`` at ``num_frames`` keyframes, linear between the prior's (presence kept on
    where either neighbour has it)."""
    if tracks.shape[0] == num_frames:
        return tracks
    out = resample_in_time(tracks, num_frames).clone()
    out[..., 0] = (out[..., 0] > 0).to(out.dtype)
    return out


def _source_grid(track: torch.Tensor, centre: tuple[float, float], height: int, width: int) -> torch.Tensor:
    """``grid_sample`` grids ``[F, H, W, 2]``: where in the first frame each pixel of keyframe f comes
    from, for one object's track ``[F, 5]`` (centre in [-1, 1], log radius, angle) starting at pixel
    ``centre`` (x, y)."""
    shift_x = (track[:, 1] - track[0, 1]) * width / 2
    shift_y = (track[:, 2] - track[0, 2]) * height / 2
    scale = torch.exp(track[:, 3] - track[0, 3])
    turn = track[:, 4] - track[0, 4]
    ys = torch.arange(height, dtype=track.dtype).view(1, -1, 1)
    xs = torch.arange(width, dtype=track.dtype).view(1, 1, -1)
    cx, cy = centre
    dx = xs - (cx + shift_x).view(-1, 1, 1)
    dy = ys - (cy + shift_y).view(-1, 1, 1)
    cos, sin = torch.cos(turn).view(-1, 1, 1), torch.sin(turn).view(-1, 1, 1)
    # Inverse of "turn by `turn`, then scale": rotate back by -turn and divide by the scale.
    sx = cx + (cos * dx + sin * dy) / scale.view(-1, 1, 1)
    sy = cy + (cos * dy - sin * dx) / scale.view(-1, 1, 1)
    return torch.stack([(sx + 0.5) / width * 2 - 1, (sy + 0.5) / height * 2 - 1], -1)


def move_objects(lifted: LiftedFrame, tracks: torch.Tensor, slots: tuple[int, ...]) -> torch.Tensor:
    """Keyframes ``[F, 3, H, W]`` (0..1): the background with each lifted object composited where its
    track ``tracks[:, slot]`` (``[F, S, 5]``) puts it, shifted, scaled and turned from where it was."""
    _, height, width = lifted.background.shape
    frames = lifted.background[None].repeat(tracks.shape[0], 1, 1, 1)
    for obj, slot in reversed(list(zip(lifted.objects, slots, strict=False))):  # largest drawn last
        track = tracks[:, slot].float()
        grid = _source_grid(track, (obj.seen.x * width, obj.seen.y * height), height, width)
        cover = obj.coverage[None, None].expand(track.shape[0], 1, height, width)
        alpha = F.grid_sample(cover, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        alpha = alpha * (track[:, 0] > 0).view(-1, 1, 1, 1).to(alpha.dtype)
        frames = frames * (1 - alpha) + obj.rgb.view(1, 3, 1, 1) * alpha
    return frames.clamp(0.0, 1.0)


@torch.no_grad()
def moved_start(
    prior: LayoutPrior,
    movq: MoVQ,
    context: torch.Tensor,
    mask: torch.Tensor,
    picture: np.ndarray,
    seen: list[SeenObject],
    num_frames: int,
    chunk_size: int = 4,
) -> torch.Tensor | None:
    """Keyframe latents ``[num_frames, C, h, w]`` of the first frame ``picture`` (uint8 ``[H, W, 3]``,
    as the video takes it) with its objects ``seen`` moved along the prior's tracks for the prompt, or
    None where no object can be lifted (or the prior has no labelled slots)."""
    if not draws_objects(prior) or not seen:
        return None
    lifted = lift_objects(picture, seen)
    if not lifted.objects:
        return None
    plan = plan_objects(prior, context, mask, [o.seen for o in lifted.objects])
    frames = move_objects(lifted, resample_tracks(plan.tracks, num_frames), plan.slots)
    weight = next(movq.parameters())
    latents = [
        movq.encode((frames[i : i + chunk_size] * 2 - 1).to(weight.device, weight.dtype)).float()
        for i in range(0, num_frames, max(1, chunk_size))
    ]
    return torch.cat(latents)

