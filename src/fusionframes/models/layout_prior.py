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


class _ConditionedBlock(nn.Module):
    """Residual block of two 3x3 convs over a feature map with its (x, y) coordinates appended, scaled
    and shifted by the caption-and-frame vector (FiLM). The coordinates let a convolution place and
    outline an object where the caption's vector says, which a translation-invariant conv cannot."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels + 2, channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, channels)
        self.film = nn.Linear(cond_dim, 2 * channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        ys = torch.linspace(-1, 1, height, dtype=x.dtype, device=x.device).view(1, 1, height, 1)
        xs = torch.linspace(-1, 1, width, dtype=x.dtype, device=x.device).view(1, 1, 1, width)
        coords = torch.cat([xs.expand(n, 1, height, width), ys.expand(n, 1, height, width)], 1)
        y = self.norm1(self.conv1(torch.cat([x, coords], 1)))
        scale, shift = self.film(cond).chunk(2, dim=-1)
        y = F.silu(y * (1 + scale[..., None, None]) + shift[..., None, None])
        return F.silu(x + self.norm2(self.conv2(y)))


class LayoutPrior(nn.Module):
    """Pooled caption -> keyframe latents ``[B, F, C, h, w]``: a text MLP and a small conv decoder.

    The pooled features are standardised with the training captions' statistics (buffers ``in_mean``,
    ``in_std``): the words that place objects move the pooled vector far less than the colour and
    background words, and unscaled they are hard for the regression to pick out. The decoder starts from
    a coarse per-frame map made from the text and refines it level by level, each block conditioned on
    the text and a learned frame embedding: a plain MLP to every latent memorised the training captions
    and drew smeared, blotchy objects, where the decoder draws one outline at one place per frame.
    """

    def __init__(self, config: LayoutPriorConfig) -> None:
        super().__init__()
        self.config = config
        hidden, channels = config.hidden_dim, config.channels
        self.seed_height = config.latent_height // 2 ** (len(channels) - 1)
        self.seed_width = config.latent_width // 2 ** (len(channels) - 1)
        self.register_buffer("in_mean", torch.zeros(config.context_dim))
        self.register_buffer("in_std", torch.ones(config.context_dim))
        self.text = nn.Sequential(
            nn.Linear(config.context_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.frame_embed = nn.Parameter(torch.randn(config.num_frames, hidden) * 0.02)
        self.seed = nn.Linear(hidden, config.num_frames * channels[0] * self.seed_height * self.seed_width)
        self.blocks = nn.ModuleList(_ConditionedBlock(c, hidden) for c in channels)
        self.upsample = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=1) for a, b in zip(channels[:-1], channels[1:], strict=True)
        )
        self.out = nn.Conv2d(channels[-1], config.latent_channels, 3, padding=1)

    def standardise(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled captions ``[B, context_dim]`` scaled by the training captions' statistics."""
        return (pooled - self.in_mean) / self.in_std

    def features(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Standardised pooled caption ``[B, context_dim]`` of the projected text ``[B, L, D]``."""
        return self.standardise(pooled_text(context.float(), mask))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Keyframe latents ``[B, F, C, h, w]`` from standardised features (:meth:`features`)."""
        c = self.config
        batch = features.shape[0]
        text = self.text(features.to(self.in_mean.dtype))
        x = self.seed(text).view(batch * c.num_frames, c.channels[0], self.seed_height, self.seed_width)
        cond = (text[:, None] + self.frame_embed[None]).reshape(batch * c.num_frames, -1)
        for level, block in enumerate(self.blocks):
            x = block(x, cond)
            if level < len(self.upsample):
                x = self.upsample[level](F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.out(x).view(batch, c.num_frames, c.latent_channels, c.latent_height, c.latent_width)

    def forward(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(context, mask))

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
