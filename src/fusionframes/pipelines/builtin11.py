"""The Kandinsky Video 1.1 parts of a FusionFrames (1.0-layout) model such as the built-in one: the
temporal MoVQ decoder (``video_movq``) and image-to-video keyframes (``image_keyframe_unet``).

The text-to-video pipeline calls in here at two points, so its own code stays one chain:

- keyframes: with an image, :func:`image_keyframe_unet` wraps the image-to-video U-Net so that it takes
  the text-to-video U-Net's call (noisy latents, time, text, frame positions) and adds the first-frame
  condition and mask channels and the augmentation level itself; both guidance branches see the image,
  so the guidance scale stays the prompt's. For a model with a layout prior, ``image_start``
  ``moved`` (the default) lifts the objects the analyser finds in the image off it and moves them, in
  pixels, along the tracks the prior reads from the text (:mod:`fusionframes.pipelines.moved_objects`);
  ``objects`` has the prior draw those objects (their colour, shape, place and size) along the same
  tracks (:func:`fusionframes.layout_prior.start.objects_start`); ``layout`` (also the fallback when no
  object is found, or the prior has no labelled object slots) moves the prior's drawing for the text
  onto the image's object (:func:`align_layout`). All three are redrawn at ``layout_prior_strength`` as
  text-to-video is: the built-in U-Net draws shapes from the start it is given, not from a start held
  still. With ``image`` (or no prior) it starts from the image held still in every keyframe, redrawn
  at ``image_strength``.
  Frame 0 of the result is the image's own latent (as 1.1's ``keep_first_frame``).
- decoding: :func:`decode_frames` with ``decoder`` ``"video"`` decodes the clip with the temporal MoVQ
  in overlapping windows (:func:`fusionframes.models.movq.decode_clip`), ``"image"`` frame by frame.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fusionframes.components import ModelComponents
from fusionframes.config import ModelConfig
from fusionframes.diffusion.schedule import DiffusionSchedule
from fusionframes.layout_prior.start import SeenObject
from fusionframes.models.movq import decode_clip
from fusionframes.pipelines.first_frame import check_image, encode_image, fitted_picture

DECODERS = ("image", "video")
# The temporal MoVQ decodes windows of this many frames sharing DECODE_OVERLAP frames with the next one
# (memory bounded by the window; the shared frames are cross-faded, so no seam shows).
DECODE_WINDOW = 6
DECODE_OVERLAP = 2
# The first frame's noise augmentation at sampling: a training timestep (the stage trains 0..100).
NOISE_AUGMENTATION = 20


def decoders(config: ModelConfig) -> tuple[str, ...]:
    """What a model can decode with: ``image`` always, ``video`` with a temporal MoVQ."""
    return DECODERS if config.video_movq is not None else ("image",)


def check_decoder(config: ModelConfig, decoder: str | None) -> str:
    """The decoder a request asks for (default: the model's ``sampling.decoder``), checked."""
    choice = decoder if decoder is not None else config.sampling.decoder
    allowed = decoders(config)
    if choice not in allowed:
        raise ValueError(
            f"decoder: unknown or unavailable {choice!r}; allowed for this model: {', '.join(allowed)}"
        )
    return choice


def check_image_support(config: ModelConfig, image: Any) -> None:
    """A model without an image-to-video U-Net cannot take a first frame: say so."""
    if image is not None and config.image_keyframe_unet is None:
        raise ValueError("image: this model has no image-to-video keyframe U-Net (image_keyframe_unet)")


def image_name(config: ModelConfig, image: Any) -> str | None:
    """What a request's settings record of its first frame: the path, or a note for an in-memory image
    (the model must be able to take one)."""
    if image is None:
        return None
    check_image_support(config, image)
    return str(image) if isinstance(image, (str, Path)) else "(in-memory image)"


def first_frame_inputs(
    first: torch.Tensor, num_frames: int, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """The condition and mask channels ``[B * F, C + 1, h, w]`` for first-frame latents ``[B, C, h, w]``:
    row 0 of each video holds its (noised) first frame and mask 1, the other rows zeros; videos with
    ``keep`` False get zeros throughout (no image: the unconditional-image branch)."""
    b, c, h, w = first.shape
    out = torch.zeros(b, num_frames, c + 1, h, w, dtype=first.dtype, device=first.device)
    out[:, 0, :c] = first
    out[:, 0, c] = 1.0
    if keep is not None:
        out = out * keep.to(out.dtype)[:, None, None, None, None]
    return out.flatten(0, 1)


class ConditionedKeyframes(nn.Module):
    """The image-to-video U-Net behind the text-to-video U-Net's call signature.

    ``condition`` ``[C + 1, h, w]`` (noised first-frame latent and mask 1) goes to row 0 of every video
    in the batch, zeros to the other rows; ``level`` is the augmentation level told to the U-Net.
    """

    def __init__(self, unet: nn.Module, condition: torch.Tensor, level: int) -> None:
        super().__init__()
        self.unet = unet
        self.condition = condition
        self.level = level
        self.config = unet.config

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        temporal_positions: torch.Tensor,
        num_frames: int,
    ) -> torch.Tensor:
        videos = x.shape[0] // num_frames
        first = self.condition[None, :-1].expand(videos, -1, -1, -1)
        extra = first_frame_inputs(first, num_frames).to(device=x.device, dtype=x.dtype)
        level = torch.full((x.shape[0],), self.level, device=x.device, dtype=time.dtype)
        return self.unet(
            torch.cat([x, extra], dim=1),
            time,
            context,
            context_mask,
            temporal_positions,
            num_frames=num_frames,
            noise_aug_time=level,
        )


def image_latent(components: ModelComponents, image: Any, width: int, height: int) -> torch.Tensor:
    """The first frame's latent ``[C, h, w]``: the image resized to cover the video and centre-cropped
    (as 1.1 takes a user's image), encoded by the image MoVQ."""
    picture = check_image(image, width, height)
    return encode_image(components.movq, picture, width, height).float()


def image_keyframe_unet(
    components: ModelComponents, first: torch.Tensor, generator: torch.Generator | None
) -> ConditionedKeyframes:
    """The image-to-video U-Net conditioned on ``first`` ``[C, h, w]``, noised to NOISE_AUGMENTATION
    (Gaussian noise drawn from ``generator`` before the keyframes' noise)."""
    unet = components.image_keyframe_unet
    if unet is None:
        raise ValueError("image: this model has no image-to-video keyframe U-Net (image_keyframe_unet)")
    schedule = DiffusionSchedule.cosine(1000)
    noise = torch.randn(first.shape, generator=generator, device="cpu").to(first.device)
    level = torch.tensor([NOISE_AUGMENTATION], device=first.device)
    noised = schedule.add_noise(first[None], noise[None], level)[0]
    condition = torch.cat([noised, torch.ones_like(noised[:1])])
    return ConditionedKeyframes(unet, condition, NOISE_AUGMENTATION)


IMAGE_STARTS = ("objects", "moved", "layout", "image")


def check_image_start(image_start: str) -> str:
    """Where image-to-video keyframe sampling starts: ``objects`` (the layout prior drawing the image's
    objects, found by the synthetic world's analyser, along the text's tracks), ``moved`` (the default:
    the image's own objects lifted off it and moved along those tracks,
    :mod:`fusionframes.pipelines.moved_objects`),
    ``layout`` (the prior's
    drawing for the text, moved onto the image's object) or ``image`` (the image held still in every
    keyframe)."""
    if image_start not in IMAGE_STARTS:
        raise ValueError(f"image_start: unknown {image_start!r}; allowed: {', '.join(IMAGE_STARTS)}")
    return image_start


def image_objects(image: Any, width: int, height: int) -> list[SeenObject]:
    """The objects of a first frame as the synthetic world's analyser sees them, in the image as the
    video takes it (covered and centre-cropped): :func:`picture_objects` of :func:`fitted_picture`."""
    return picture_objects(fitted_picture(image, width, height))


def picture_objects(picture: np.ndarray) -> list[SeenObject]:
    """The objects of ``picture`` (uint8 ``[H, W, 3]``) as the synthetic world's analyser sees them
    (colour, shape, centre, and the radius their area implies for that shape); none for a picture
    outside that world."""
    from fusionframes.evaluation.analysis import analyse_clip
    from fusionframes.synthetic.render import unit_area

    height, width = picture.shape[:2]
    found = []
    for track in analyse_clip(np.stack([picture, picture])).objects:  # a still two-frame clip
        if track.shape == "unknown" or not track.areas[0] > 0:
            continue
        radius = math.sqrt(float(track.areas[0]) / unit_area(track.shape)) / min(width, height)
        x, y = track.centroids[0]
        found.append(SeenObject(track.colour, track.shape, float(x) / width, float(y) / height, radius))
    return found


def _foreground(latent: torch.Tensor) -> torch.Tensor:
    """``latent`` ``[C, h, w]`` less its per-channel median: what differs from the background."""
    return latent - latent.flatten(1).median(dim=1).values[:, None, None]


def align_layout(layout: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """``layout`` ``[F, C, h, w]`` moved by the whole-latent-pixel offset that lays its first keyframe
    best over ``first`` ``[C, h, w]`` (the largest cross-correlation of what differs from each one's
    background); edges are filled by repeating the border. The prior draws where the text puts an
    object and how it moves; the image says where it starts, so the track is kept and only its offset
    taken from the image."""
    _, _, h, w = layout.shape
    source, target = _foreground(layout[0].float()), _foreground(first.float())
    size = (2 * h, 2 * w)  # zero-padded: a linear, not circular, correlation
    spectrum = torch.fft.rfft2(target, s=size) * torch.fft.rfft2(source, s=size).conj()
    correlation = torch.fft.irfft2(spectrum, s=size).sum(0)
    index = int(correlation.argmax())
    dy, dx = index // size[1], index % size[1]
    dy, dx = (dy - size[0] if dy >= h else dy), (dx - size[1] if dx >= w else dx)
    edges = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))
    padded = torch.nn.functional.pad(layout, edges, mode="replicate")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[:, :, top : top + h, left : left + w].contiguous()


def decode_frames(
    components: ModelComponents, latents: torch.Tensor, decoder: str, chunk_size: int, progress: bool
) -> torch.Tensor:
    """Latents -> RGB ``[T, 3, H, W]`` in [0, 1]: ``video`` with the temporal MoVQ (windows of
    DECODE_WINDOW frames, DECODE_OVERLAP shared), ``image`` with the image MoVQ ``chunk_size`` at once."""
    from fusionframes.pipelines.stages import decode_latents

    if decoder == "image":
        return decode_latents(components.movq, latents, chunk_size, progress)
    movq = components.video_movq
    if movq is None:
        raise ValueError("decoder: 'video' needs a temporal MoVQ (video_movq); this model has none")
    weight = next(movq.parameters())
    with torch.no_grad():
        out = decode_clip(movq, latents.to(weight.device, weight.dtype), DECODE_WINDOW, DECODE_OVERLAP)
    return out.float().add(1.0).div(2.0).clamp(0.0, 1.0)
