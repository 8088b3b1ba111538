"""The building blocks of the Kandinsky Video U-Net3D (:mod:`fusionframes.models.unet`): convolution
and residual blocks with their temporal parts, spatial, temporal and group attention, and the
attention pooling of the text into the time embedding. Module and parameter names follow the official
code, so checkpoints load by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fusionframes.models.layers import (
    Attention,
    ConditionalGroupNorm,
    TemporalAttention,
    TemporalConv,
)


@dataclass
class TemporalInputs:
    """What the temporal layers of one forward pass need; None fields turn the matching layers off.

    ``num_frames``/``frame_embed``/``mixed_embed``: keyframe video (frames per video, the frame-position
    embedding, and time + frame embedding for 1.1 norms). ``groups``/``mask``: interpolation (groups
    per branch along the batch, and the per-row blend weight of 1.1, None = 1).
    """

    num_frames: int | None = None
    frame_embed: torch.Tensor | None = None
    mixed_embed: torch.Tensor | None = None
    groups: int | None = None
    mask: torch.Tensor | None = None

    @property
    def video(self) -> bool:
        return self.num_frames is not None and self.frame_embed is not None


def blend_temporal(
    x: torch.Tensor, merge: torch.Tensor, conv: nn.Module, groups: int, mask: torch.Tensor | None
) -> torch.Tensor:
    """``(1 - m) x + m conv_t(x)`` with ``m = merge`` (x ``mask`` per row): a temporal conv mixed in."""
    mixed = conv.frames(x, groups)
    if mask is not None:
        merge = merge * mask.to(x.dtype)[:, None, None, None]
    return torch.lerp(x, mixed, merge.to(x.dtype))


class TemporalBlend(nn.Module):
    """1.1's 3-tap temporal conv with its own blend weight (``temporal_merge``), starting at identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.temporal_merge = nn.Parameter(torch.zeros(1))
        self.temporal_projection = TemporalConv(channels, channels, 3)
        nn.init.zeros_(self.temporal_projection.weight)
        nn.init.zeros_(self.temporal_projection.bias)

    def forward(self, x: torch.Tensor, temporal: TemporalInputs) -> torch.Tensor:
        if temporal.groups is None:
            return x
        return blend_temporal(
            x, self.temporal_merge, self.temporal_projection, temporal.groups, temporal.mask
        )


class ConvBlock(nn.Module):
    """Norm -> SiLU -> (upsample) -> conv -> (temporal conv blend) -> (downsample).

    ``temporal``: None, "1.0" (blend weights on this block: ``temporal_merge``/``temporal_projection``)
    or "1.1" (``temporal_projection_new``, masked per row). ``new_params`` (1.1): one more blend right
    after the upsampling or the downsampling.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embed_dim: int,
        kernel_size: int,
        groups: int,
        resample: str | None,
        temporal: str | None,
        new_params: bool = False,
    ) -> None:
        super().__init__()
        self.group_norm = ConditionalGroupNorm(groups, in_channels, embed_dim)
        self.activation = nn.SiLU()
        self.up_sample = (
            nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2)
            if resample == "up"
            else nn.Identity()
        )
        self.projection = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.down_sample = (
            nn.Conv2d(out_channels, out_channels, kernel_size=2, stride=2)
            if resample == "down"
            else nn.Identity()
        )
        self.temporal = temporal
        if temporal == "1.0":
            self.temporal_merge = nn.Parameter(torch.zeros(1))
            self.temporal_projection = TemporalConv(out_channels, out_channels, 3)
            nn.init.zeros_(self.temporal_projection.weight)
            nn.init.zeros_(self.temporal_projection.bias)
        elif temporal == "1.1":
            # 1.1 builds the post-resample blend on out_channels; resampling convs keep the width.
            self.temporal_post_upsample = optional_block(
                new_params and resample == "up", lambda: TemporalBlend(out_channels)
            )
            self.temporal_projection_new = TemporalBlend(out_channels)
            self.temporal_post_downsample = optional_block(
                new_params and resample == "down", lambda: TemporalBlend(out_channels)
            )

    def forward(self, x: torch.Tensor, embed: torch.Tensor, temporal: TemporalInputs) -> torch.Tensor:
        x = self.up_sample(self.activation(self.group_norm(x, embed)))
        if self.temporal == "1.1":
            x = self.temporal_post_upsample(x, temporal)
            x = self.temporal_projection_new(self.projection(x), temporal)
            return self.temporal_post_downsample(self.down_sample(x), temporal)
        x = self.projection(x)
        if self.temporal == "1.0" and temporal.groups is not None:
            x = blend_temporal(x, self.temporal_merge, self.temporal_projection, temporal.groups, None)
        return self.down_sample(x)


class ResNetBlock(nn.Module):
    """Bottleneck residual block: 1x1 -> 3x3 -> 3x3 -> 1x1 convolutions, one may resample."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embed_dim: int,
        groups: int,
        compression_ratio: int,
        resample: tuple[str | None, ...] = (None, None, None, None),
        temporal: str | None = None,
        new_params: bool = False,
    ) -> None:
        super().__init__()
        hidden = max(in_channels, out_channels) // compression_ratio
        pairs = [(in_channels, hidden), (hidden, hidden), (hidden, hidden), (hidden, out_channels)]
        self.resnet_blocks = nn.ModuleList(
            ConvBlock(cin, cout, embed_dim, k, groups, r, temporal, new_params)
            for (cin, cout), k, r in zip(pairs, (1, 3, 3, 1), resample, strict=True)
        )
        self.shortcut_up_sample = (
            nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2)
            if "up" in resample
            else nn.Identity()
        )
        self.shortcut_projection = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.shortcut_down_sample = (
            nn.Conv2d(out_channels, out_channels, kernel_size=2, stride=2)
            if "down" in resample
            else nn.Identity()
        )
        if temporal == "1.1" and new_params:
            # As in 1.1: both exist, but its shortcut runs the post-upsample blend twice (before and
            # after the projection) and never the post-downsample one, whose weights load unused.
            self.temporal_post_upsample = optional_block("up" in resample, lambda: TemporalBlend(in_channels))
            self.temporal_post_downsample = optional_block(
                "down" in resample, lambda: TemporalBlend(out_channels)
            )

    def forward(self, x: torch.Tensor, embed: torch.Tensor, temporal: TemporalInputs) -> torch.Tensor:
        out = x
        for block in self.resnet_blocks:
            out = block(out, embed, temporal)
        shortcut = self.shortcut_up_sample(x)
        if hasattr(self, "temporal_post_upsample"):
            shortcut = self.temporal_post_upsample(shortcut, temporal)
            shortcut = self.temporal_post_upsample(
                self.shortcut_down_sample(self.shortcut_projection(shortcut)), temporal
            )
        else:
            shortcut = self.shortcut_down_sample(self.shortcut_projection(shortcut))
        return shortcut + out


class TemporalResNetBlock(nn.Module):
    """Residual stack of temporal convolutions (kernels 1, 3, 3, 1 along time).

    Its norms see the time embedding (1.0) or time + frame embedding (1.1, ``frame_conditioned``).
    """

    def __init__(
        self,
        channels: int,
        embed_dim: int,
        groups: int,
        compression_ratio: int,
        frame_conditioned: bool = False,
    ) -> None:
        super().__init__()
        self.frame_conditioned = frame_conditioned
        hidden = channels // compression_ratio
        pairs = [(channels, hidden), (hidden, hidden), (hidden, hidden), (hidden, channels)]
        self.temporal_resnet_blocks = nn.ModuleList(
            nn.ModuleList(
                [
                    ConditionalGroupNorm(groups, cin, embed_dim),
                    nn.SiLU(),
                    TemporalConv(cin, cout, k),
                ]
            )
            for (cin, cout), k in zip(pairs, (1, 3, 3, 1), strict=True)
        )
        last_conv = self.temporal_resnet_blocks[-1][-1]
        nn.init.zeros_(last_conv.weight)  # starts as identity: safe to add to a trained image model
        nn.init.zeros_(last_conv.bias)

    def forward(self, x: torch.Tensor, embed: torch.Tensor, temporal: TemporalInputs) -> torch.Tensor:
        if not temporal.video:
            return x  # 1.1's image mode: the spatial network alone
        embed = temporal.mixed_embed if self.frame_conditioned else embed
        out = x
        for norm, activation, conv in self.temporal_resnet_blocks:
            out = conv.frames(activation(norm(out, embed)), temporal.num_frames)
        return x + out


class AttentionBlock(nn.Module):
    """Spatial self- or cross-attention followed by a 1x1-conv feed-forward, both residual."""

    def __init__(
        self,
        channels: int,
        embed_dim: int,
        context_dim: int | None,
        groups: int,
        head_dim: int,
        expansion: int,
    ) -> None:
        super().__init__()
        self.in_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.attention = Attention(channels, channels, context_dim or channels, head_dim)
        self.out_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.feed_forward = _feed_forward(channels, expansion)

    def forward(
        self,
        x: torch.Tensor,
        embed: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.in_norm(x, embed).flatten(2).transpose(1, 2)
        if context is None:
            out = self.attention(tokens, tokens)
        else:
            out = self.attention(tokens, context, context_mask)
        x = x + out.transpose(1, 2).reshape(b, c, h, w)
        return x + self.feed_forward(self.out_norm(x, embed))


def _feed_forward(channels: int, expansion: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, expansion * channels, kernel_size=1, bias=False),
        nn.SiLU(),
        nn.Conv2d(expansion * channels, channels, kernel_size=1, bias=False),
    )


class TemporalAttentionBlock(nn.Module):
    """Attention across the frames of a video at each pixel, then a feed-forward; both residual.

    1.0: the attention norm sees the frame-position embedding, the feed-forward norm the time
    embedding (``in_norm``/``out_norm``). 1.1: both see time + frame (``temporal_norm``/``ff_norm``).
    """

    def __init__(
        self, channels: int, embed_dim: int, groups: int, head_dim: int, expansion: int, release: str = "1.0"
    ) -> None:
        super().__init__()
        self.release = release
        norm_names = ("in_norm", "out_norm") if release == "1.0" else ("temporal_norm", "ff_norm")
        self._norm_names = norm_names
        setattr(self, norm_names[0], ConditionalGroupNorm(groups, channels, embed_dim))
        self.temporal_attention = TemporalAttention(channels, channels, head_dim)
        setattr(self, norm_names[1], ConditionalGroupNorm(groups, channels, embed_dim))
        self.feed_forward = _feed_forward(channels, expansion)

    def forward(self, x: torch.Tensor, embed: torch.Tensor, temporal: TemporalInputs) -> torch.Tensor:
        if not temporal.video:
            return x
        attention_norm, ff_norm = (getattr(self, name) for name in self._norm_names)
        if self.release == "1.0":
            attention_embed, ff_embed = temporal.frame_embed, embed
        else:
            attention_embed = ff_embed = temporal.mixed_embed
        bt, c, h, w = x.shape
        frames = temporal.num_frames
        out = attention_norm(x, attention_embed)
        out = out.view(bt // frames, frames, c, h * w).transpose(2, 3)  # [B, T, N, C]
        out = self.temporal_attention(out)
        x = x + out.transpose(2, 3).reshape(bt, c, h, w)
        return x + self.feed_forward(ff_norm(x, ff_embed))


class GroupAttentionBlock(nn.Module):
    """1.1 interpolation: attention across the groups of a branch at each pixel, then a feed-forward,
    each blended in with its own weight (``temporal_merge1``/``2``) x the row's ``temporal_mask``."""

    def __init__(self, channels: int, embed_dim: int, groups: int, head_dim: int, expansion: int) -> None:
        super().__init__()
        self.in_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.attention = Attention(channels, channels, channels, head_dim)
        self.out_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.feed_forward = _feed_forward(channels, expansion)
        self.temporal_merge1 = nn.Parameter(torch.zeros(1))
        self.temporal_merge2 = nn.Parameter(torch.zeros(1))

    def _blend(self, x: torch.Tensor, out: torch.Tensor, merge: torch.Tensor, mask) -> torch.Tensor:
        if mask is not None:
            merge = merge * mask.to(x.dtype)[:, None, None, None]
        return (1 - merge) * x + merge * out

    def forward(self, x: torch.Tensor, embed: torch.Tensor, temporal: TemporalInputs) -> torch.Tensor:
        if temporal.groups is None:
            return x
        bt, c, h, w = x.shape
        groups = temporal.groups
        out = self.in_norm(x, embed).view(bt // groups, groups, c, h * w).permute(0, 3, 1, 2)
        tokens = out.reshape(-1, groups, c)  # [(B*N), T, C]
        out = self.attention(tokens, tokens)
        out = out.view(bt // groups, h * w, groups, c).permute(0, 2, 3, 1).reshape(bt, c, h, w)
        x = self._blend(x, out, self.temporal_merge1, temporal.mask)
        return self._blend(x, self.feed_forward(self.out_norm(x, embed)), self.temporal_merge2, temporal.mask)


class Absent(nn.Module):
    """Parameter-free placeholder for a block a level does not have; keeps ModuleList indices stable."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x


def optional_block(condition: bool, make) -> nn.Module:
    return make() if condition else Absent()


class AttentionPooling(nn.Module):
    """Adds an attention-pooled summary of the text to the time embedding."""

    def __init__(self, embed_dim: int, context_dim: int, head_dim: int) -> None:
        super().__init__()
        self.attention = Attention(context_dim, embed_dim, context_dim, head_dim)

    def forward(
        self, embed: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None
    ) -> torch.Tensor:
        pooled = self.attention(context.mean(dim=1, keepdim=True), context, context_mask)
        return embed + pooled.squeeze(1)
