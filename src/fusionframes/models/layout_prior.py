"""Text-to-layout prior: the mean keyframe latents a caption implies, to start keyframe sampling from.

Near pure noise a keyframe U-Net must decide the layout of the whole video (where the objects are in
each keyframe) from the words alone, and a small model trained on little data learns the words that
decide it (which way things move) far more slowly than the ones that colour it. This network learns
that part directly, by regression from the caption to the keyframe latents (a text-conditioned prior
mean, as in Grad-TTS); sampling then starts from its output noised like an image-to-image redraw, so
the U-Net refines a layout instead of inventing one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fusionframes.config import LayoutPriorConfig


def pooled_text(context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the projected text tokens ``[B, L, D]`` over the valid ones (``mask`` ``[B, L]``)."""
    weights = mask.to(context.dtype).unsqueeze(-1)
    return (context * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def low_pass(latents: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[N, C, h, w]`` latents (edges replicated); ``sigma`` 0 returns them as
    they are. A blurred layout still says where each object is in each keyframe but leaves its outline
    to the U-Net."""
    if sigma <= 0:
        return latents
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=latents.dtype, device=latents.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = latents.shape[1]
    rows = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    out = F.conv2d(F.pad(latents, (radius, radius, 0, 0), mode="replicate"), rows, groups=channels)
    cols = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), cols, groups=channels)


class LayoutPrior(nn.Module):
    """Pooled caption -> keyframe latents ``[B, F, C, h, w]``: a small MLP over standardised features.

    The pooled features are standardised with the training captions' statistics (buffers ``in_mean``,
    ``in_std``): the words that place objects move the pooled vector far less than the colour and
    background words, and unscaled they are hard for the regression to pick out.
    """

    def __init__(self, config: LayoutPriorConfig) -> None:
        super().__init__()
        self.config = config
        out = config.num_frames * config.latent_channels * config.latent_height * config.latent_width
        self.register_buffer("in_mean", torch.zeros(config.context_dim))
        self.register_buffer("in_std", torch.ones(config.context_dim))
        self.net = nn.Sequential(
            nn.Linear(config.context_dim, config.hidden_dim),
            nn.SiLU(),
            nn.Linear(config.hidden_dim, config.hidden_dim),
            nn.SiLU(),
            nn.Linear(config.hidden_dim, out),
        )

    def forward(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        c = self.config
        features = (pooled_text(context.float(), mask) - self.in_mean) / self.in_std
        out = self.net(features.to(self.in_mean.dtype))
        return out.view(-1, c.num_frames, c.latent_channels, c.latent_height, c.latent_width)

    def layout(
        self, context: torch.Tensor, mask: torch.Tensor, num_frames: int, latent_shape: tuple[int, int, int]
    ) -> torch.Tensor:
        """The layout of one video ``[num_frames, C, h, w]`` (``context`` ``[1, L, D]``), resampled in time
        and space when the video has another number of keyframes or size than the prior was trained for."""
        channels, height, width = latent_shape
        if channels != self.config.latent_channels:
            raise ValueError(
                f"latent_shape: {channels} channels, but the layout prior makes {self.config.latent_channels}"
            )
        frames = self(context[:1], mask[:1])[0].float()  # [F, C, h, w]
        if frames.shape[-2:] != (height, width):
            frames = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False)
        if frames.shape[0] != num_frames:
            flat = frames.permute(1, 2, 3, 0).reshape(1, -1, frames.shape[0])
            flat = F.interpolate(flat, size=num_frames, mode="linear", align_corners=True)
            frames = flat.reshape(channels, height, width, num_frames).permute(3, 0, 1, 2)
        return frames.contiguous()
