"""Where keyframe sampling starts for a model folder with a layout prior.

The prior's layout for the caption (the keyframe latents it implies) is what keyframe sampling starts
from, noised like an image-to-image redraw to the level of the last ``layout_prior_strength`` share of
the steps, so the U-Net refines where things are instead of picking it from the noise. This module
makes that layout at the size and keyframe count of the video asked for; the pipeline calls
:func:`keyframe_start` and nothing else of the prior.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fusionframes.layout_prior.model import LayoutPrior


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
    channels, height, width = latent_shape
    if channels != prior.config.latent_channels:
        raise ValueError(
            f"latent_shape: {channels} channels, but the layout prior makes {prior.config.latent_channels}"
        )
    frames = prior(context[:1].float(), mask[:1])[0].float()  # [F, C, h, w]
    if frames.shape[-2:] != (height, width):
        frames = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False)
    if frames.shape[0] != num_frames:
        flat = frames.permute(1, 2, 3, 0).reshape(1, -1, frames.shape[0])
        flat = F.interpolate(flat, size=num_frames, mode="linear", align_corners=True)
        frames = flat.reshape(channels, height, width, num_frames).permute(3, 0, 1, 2)
    return frames.contiguous()
