"""Text-to-layout prior: the mean keyframe latents a caption implies, to start keyframe sampling from.

Near pure noise a keyframe U-Net must decide the layout of the whole video (where the objects are in
each keyframe) from the words alone, and a small model trained on little data learns the words that
decide it (which way things move) far more slowly than the ones that colour it. This network learns
that part directly, by regression from the caption to the keyframe latents (a text-conditioned prior
mean, as in Grad-TTS); sampling then starts from its output noised like an image-to-image redraw, so
the U-Net refines a layout instead of inventing one.

Given object tracks to learn from (the synthetic world's ground truth), the prior also predicts where
each object is in each keyframe (centre, radius, angle) and draws every object in its own object-centred
coordinates, as layout-guided video models plan boxes before pixels (LVD, Lian et al. 2023): reading a
direction word into a position is then a small regression of its own, and the decoder learns one
outline per shape instead of one per place.
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


TRACK_FIELDS = 5  # per object and keyframe: present (0/1), centre x, centre y, log radius, angle (radians)
SLOT_CODE_DIM = 8  # per object slot: what the text says that object looks like, painted at its place
OBJECT_MAP_CHANNELS = 4 + SLOT_CODE_DIM  # per object slot, see object_maps


def object_maps(tracks: torch.Tensor, codes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-slot object-centred maps ``[B * F, (4 + K) * S, height, width]`` of tracks ``[B, F, S, 5]``
    and slot codes ``[B, S, K]``.

    Centres are in [-1, 1] image coordinates and radii are fractions of half the image; each slot gives
    the grid's position in the object's own frame (rotated by its angle, in radii, clipped to +-4), a
    Gaussian bump at the object, its presence, and its code times the bump, so a convolution knows which
    object (which colour and shape) is where; an absent slot is all zeros.
    """
    batch, frames, slots, fields = tracks.shape
    if fields != TRACK_FIELDS:
        raise ValueError(f"tracks: last dimension must be {TRACK_FIELDS}, got {fields}")
    t = tracks.reshape(batch * frames, slots, fields)
    ys = ((torch.arange(height, dtype=t.dtype, device=t.device) + 0.5) / height * 2 - 1).view(1, 1, -1, 1)
    xs = ((torch.arange(width, dtype=t.dtype, device=t.device) + 0.5) / width * 2 - 1).view(1, 1, 1, -1)
    present, cx, cy, log_radius, angle = (t[..., i, None, None] for i in range(TRACK_FIELDS))
    radius = log_radius.exp()
    dx, dy = (xs - cx) / radius, (ys - cy) / radius
    cos, sin = torch.cos(angle), torch.sin(angle)
    u = (cos * dx + sin * dy).clamp(-4, 4)
    v = (cos * dy - sin * dx).clamp(-4, 4)
    bump = present * torch.exp(-(u**2 + v**2))
    maps = torch.stack([present * u, present * v, bump, present.expand_as(u)], 2)  # [B*F, S, 4, h, w]
    if codes.shape != (batch, slots, codes.shape[-1]):
        raise ValueError(f"codes: must be [{batch}, {slots}, K], got {tuple(codes.shape)}")
    painted = codes.repeat_interleave(frames, 0)[..., None, None] * bump[:, :, None]  # [B*F, S, K, h, w]
    return torch.cat([maps, painted.to(maps.dtype)], 2).flatten(1, 2)


class _ConditionedBlock(nn.Module):
    """Residual block of two 3x3 convs over a feature map with its (x, y) coordinates (and any object
    maps) appended, scaled and shifted by the caption-and-frame vector (FiLM). The coordinates let a
    convolution place and outline an object where the caption's vector says, which a
    translation-invariant conv cannot."""

    def __init__(self, channels: int, cond_dim: int, extra: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels + 2 + extra, channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, channels)
        self.film = nn.Linear(cond_dim, 2 * channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, channels)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, objects: torch.Tensor | None = None
    ) -> torch.Tensor:
        n, _, height, width = x.shape
        ys = torch.linspace(-1, 1, height, dtype=x.dtype, device=x.device).view(1, 1, height, 1)
        xs = torch.linspace(-1, 1, width, dtype=x.dtype, device=x.device).view(1, 1, 1, width)
        inputs = [x, xs.expand(n, 1, height, width), ys.expand(n, 1, height, width)]
        if objects is not None:
            inputs.append(objects.to(x.dtype))
        y = self.norm1(self.conv1(torch.cat(inputs, 1)))
        scale, shift = self.film(cond).chunk(2, dim=-1)
        y = F.silu(y * (1 + scale[..., None, None]) + shift[..., None, None])
        return F.silu(x + self.norm2(self.conv2(y)))


class TrackPredictor(nn.Module):
    """Caption -> raw object tracks ``[B, F, S, 5]`` (presence logit, centre x, y, log radius, angle).

    The words that say where an object goes are two or three tokens of a long caption, and the mean over
    the tokens blurs them: an MLP on the pooled caption alone read the direction of 76% of held-out
    synthetic clips, this one (a few learned queries attending over the tokens, beside the pooled
    caption) 95% (docs/training.md, "Tracked layout prior")."""

    def __init__(
        self, context_dim: int, hidden: int, frames: int, slots: int, queries: int = 4, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.frames, self.slots = frames, slots
        self.norm = nn.LayerNorm(context_dim)
        self.queries = nn.Parameter(torch.randn(queries, context_dim) * 0.1)
        self.keys = nn.Linear(context_dim, context_dim)
        self.mlp = nn.Sequential(
            nn.Linear(context_dim * (queries + 1), hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, frames * slots * TRACK_FIELDS),
        )

    def forward(self, features: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(context.to(features.dtype))
        scores = torch.einsum("qd,bld->bql", self.queries, self.keys(tokens)) / tokens.shape[-1] ** 0.5
        scores = scores.masked_fill(~mask.bool()[:, None], float("-inf")).softmax(-1)
        found = torch.einsum("bql,bld->bqd", scores, tokens).flatten(1)
        raw = self.mlp(torch.cat([features, found], 1))
        return raw.view(-1, self.frames, self.slots, TRACK_FIELDS)


def tracks_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Tracks ``[B, F, S, 5]`` to draw from raw predictions: a slot is present where its logit is > 0."""
    return torch.cat([(logits[..., :1] > 0).to(logits.dtype), logits[..., 1:]], -1)


class LayoutPrior(nn.Module):
    """Caption -> keyframe latents ``[B, F, C, h, w]``: a text MLP, a small conv decoder and, with object
    slots, a track predictor whose tracks the decoder draws the objects along.

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
        hidden, channels, slots = config.hidden_dim, config.channels, config.object_slots
        self.seed_height = config.latent_height // 2 ** (len(channels) - 1)
        self.seed_width = config.latent_width // 2 ** (len(channels) - 1)
        self.register_buffer("in_mean", torch.zeros(config.context_dim))
        self.register_buffer("in_std", torch.ones(config.context_dim))
        self.text = nn.Sequential(
            nn.Linear(config.context_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.tracker = TrackPredictor(config.context_dim, hidden, config.num_frames, slots) if slots else None
        self.slot_codes = nn.Linear(hidden, slots * SLOT_CODE_DIM) if slots else None
        self.frame_embed = nn.Parameter(torch.randn(config.num_frames, hidden) * 0.02)
        self.seed = nn.Linear(hidden, config.num_frames * channels[0] * self.seed_height * self.seed_width)
        self.blocks = nn.ModuleList(
            _ConditionedBlock(c, hidden, OBJECT_MAP_CHANNELS * slots) for c in channels
        )
        self.upsample = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=1) for a, b in zip(channels[:-1], channels[1:], strict=True)
        )
        self.out = nn.Conv2d(channels[-1], config.latent_channels, 3, padding=1)

    def standardise(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled captions ``[B, context_dim]`` scaled by the training captions' statistics."""
        return (pooled - self.in_mean) / self.in_std

    def features(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Standardised pooled caption ``[B, context_dim]`` of the projected text ``[B, L, D]``."""
        return self.standardise(pooled_text(context.float(), mask).to(self.in_mean.dtype))

    def track_logits(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Raw track predictions ``[B, F, S, 5]`` for the projected text ``[B, L, D]``."""
        if self.tracker is None:
            raise ValueError("this layout prior tracks no objects (LayoutPriorConfig.object_slots is 0)")
        return self.tracker(self.features(context, mask), context, mask)

    def draw(
        self, context: torch.Tensor, mask: torch.Tensor, tracks: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Keyframe latents ``[B, F, C, h, w]`` for the projected text and, for a prior with object slots,
        the tracks ``[B, F, S, 5]`` to draw the objects along (in training, the true ones)."""
        c = self.config
        if (tracks is None) != (c.object_slots == 0):
            raise ValueError(f"tracks: needed exactly when the prior has object slots ({c.object_slots})")
        text = self.text(self.features(context, mask))
        batch = text.shape[0]
        x = self.seed(text).view(batch * c.num_frames, c.channels[0], self.seed_height, self.seed_width)
        cond = (text[:, None] + self.frame_embed[None]).reshape(batch * c.num_frames, -1)
        codes = self.slot_codes(text).view(batch, c.object_slots, -1) if self.slot_codes is not None else None
        for level, block in enumerate(self.blocks):
            objects = object_maps(tracks, codes, x.shape[-2], x.shape[-1]) if tracks is not None else None
            x = block(x, cond, objects)
            if level < len(self.upsample):
                x = self.upsample[level](F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.out(x).view(batch, c.num_frames, c.latent_channels, c.latent_height, c.latent_width)

    def forward(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Keyframe latents for the projected text, the objects drawn along the predicted tracks."""
        tracks = tracks_from_logits(self.track_logits(context, mask)) if self.tracker is not None else None
        return self.draw(context, mask, tracks)

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
