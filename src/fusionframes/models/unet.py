"""The Kandinsky Video U-Net3D: a spatial U-Net with temporal layers between its spatial layers.

One class serves both networks of the release:

* keyframes (``num_frames`` set): temporal 1D-convolution residual blocks after every spatial
  residual block, temporal attention (with frame-position embeddings) next to self-attention;
* interpolation (``interpolation=True``): temporal 3-tap convolutions blended into every spatial
  convolution, running across the interpolation groups of a video, plus a skip-frames embedding.

Frames of one video are consecutive along the batch axis; the number of frames per video is a
forward argument, so any keyframe count works with the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionframes.config import UNetConfig
from fusionframes.models.layers import (
    Attention,
    ConditionalGroupNorm,
    TemporalAttention,
    TemporalConv,
    channels_time_to_frames,
    embedding_mlp,
    frames_to_channels_time,
)


class ConvBlock(nn.Module):
    """Norm -> SiLU -> (upsample) -> conv -> (temporal conv blend) -> (downsample)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embed_dim: int,
        kernel_size: int,
        groups: int,
        resample: str | None,
        temporal: bool,
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
        if temporal:
            self.temporal_merge = nn.Parameter(torch.zeros(1))
            self.temporal_projection = TemporalConv(out_channels, out_channels, 3)
            nn.init.zeros_(self.temporal_projection.weight)
            nn.init.zeros_(self.temporal_projection.bias)

    def forward(self, x: torch.Tensor, embed: torch.Tensor, num_temporal_groups: int | None) -> torch.Tensor:
        x = self.projection(self.up_sample(self.activation(self.group_norm(x, embed))))
        if self.temporal and num_temporal_groups is not None:
            mixed = channels_time_to_frames(
                self.temporal_projection(frames_to_channels_time(x, num_temporal_groups))
            )
            x = (1 - self.temporal_merge) * x + self.temporal_merge * mixed
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
        temporal: bool = False,
    ) -> None:
        super().__init__()
        hidden = max(in_channels, out_channels) // compression_ratio
        pairs = [(in_channels, hidden), (hidden, hidden), (hidden, hidden), (hidden, out_channels)]
        self.resnet_blocks = nn.ModuleList(
            ConvBlock(cin, cout, embed_dim, k, groups, r, temporal)
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

    def forward(
        self, x: torch.Tensor, embed: torch.Tensor, num_temporal_groups: int | None = None
    ) -> torch.Tensor:
        out = x
        for block in self.resnet_blocks:
            out = block(out, embed, num_temporal_groups)
        return self.shortcut_down_sample(self.shortcut_projection(self.shortcut_up_sample(x))) + out


class TemporalResNetBlock(nn.Module):
    """Residual stack of temporal convolutions (kernels 1, 3, 3, 1 along time)."""

    def __init__(self, channels: int, embed_dim: int, groups: int, compression_ratio: int) -> None:
        super().__init__()
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

    def forward(self, x: torch.Tensor, embed: torch.Tensor, num_frames: int) -> torch.Tensor:
        out = x
        for norm, activation, conv in self.temporal_resnet_blocks:
            out = channels_time_to_frames(
                conv(frames_to_channels_time(activation(norm(out, embed)), num_frames))
            )
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
        self.feed_forward = nn.Sequential(
            nn.Conv2d(channels, expansion * channels, kernel_size=1, bias=False),
            nn.SiLU(),
            nn.Conv2d(expansion * channels, channels, kernel_size=1, bias=False),
        )

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


class TemporalAttentionBlock(nn.Module):
    """Attention across the frames of a video at each pixel; normalised by frame-position embeddings."""

    def __init__(self, channels: int, embed_dim: int, groups: int, head_dim: int, expansion: int) -> None:
        super().__init__()
        self.in_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.temporal_attention = TemporalAttention(channels, channels, head_dim)
        self.out_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.feed_forward = nn.Sequential(
            nn.Conv2d(channels, expansion * channels, kernel_size=1, bias=False),
            nn.SiLU(),
            nn.Conv2d(expansion * channels, channels, kernel_size=1, bias=False),
        )

    def forward(
        self, x: torch.Tensor, embed: torch.Tensor, temporal_embed: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        bt, c, h, w = x.shape
        out = self.in_norm(x, temporal_embed)
        out = out.view(bt // num_frames, num_frames, c, h * w).transpose(2, 3)  # [B, T, N, C]
        out = self.temporal_attention(out)
        x = x + out.transpose(2, 3).reshape(bt, c, h, w)
        return x + self.feed_forward(self.out_norm(x, embed))


class Absent(nn.Module):
    """Parameter-free placeholder for a block a level does not have; keeps ModuleList indices stable."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x


def _optional(condition: bool, make) -> nn.Module:
    return make() if condition else Absent()


NO_RESAMPLE = (None, None, None, None)


def _residual_group(
    cfg: UNetConfig,
    cin: int,
    cmid: int,
    cout: int,
    context_dim: int | None,
    first_resample: tuple[str | None, ...],
    second_resample: tuple[str | None, ...],
    temporal_channels: int,
) -> nn.ModuleList:
    """(resnet, cross-attention, resnet, temporal resnet, temporal resnet): one group of a level."""
    e, g, r = cfg.time_embed_dim, cfg.groups, cfg.compression_ratio
    video = cfg.num_frames is not None
    return nn.ModuleList(
        [
            ResNetBlock(cin, cmid, e, g, r, first_resample, temporal=cfg.interpolation),
            _optional(
                context_dim is not None,
                lambda: AttentionBlock(cmid, e, context_dim, g, cfg.head_dim, cfg.expansion_ratio),
            ),
            ResNetBlock(cmid, cout, e, g, r, second_resample, temporal=cfg.interpolation),
            _optional(video, lambda: TemporalResNetBlock(temporal_channels, e, g, r)),
            _optional(video, lambda: TemporalResNetBlock(temporal_channels, e, g, r)),
        ]
    )


def _attention_blocks(cfg: UNetConfig, channels: int, self_attention: bool) -> tuple[nn.Module, nn.Module]:
    """The level's spatial self-attention and (for keyframe models) temporal attention."""
    e, g = cfg.time_embed_dim, cfg.groups
    spatial = _optional(
        self_attention, lambda: AttentionBlock(channels, e, None, g, cfg.head_dim, cfg.expansion_ratio)
    )
    temporal = _optional(
        cfg.num_frames is not None and self_attention,
        lambda: TemporalAttentionBlock(channels, e, g, cfg.head_dim, cfg.expansion_ratio),
    )
    return spatial, temporal


class DownLevel(nn.Module):
    """Self/temporal attention, then ``num_blocks`` residual groups; the last may halve the size."""

    def __init__(
        self,
        cfg: UNetConfig,
        cin: int,
        cout: int,
        context_dim,
        num_blocks: int,
        down: bool,
        self_attention: bool,
    ) -> None:
        super().__init__()
        self.self_attention_block, self.temporal_attention_block = _attention_blocks(cfg, cin, self_attention)
        self.resnet_attn_blocks = nn.ModuleList(
            _residual_group(
                cfg,
                cin if i == 0 else cout,
                cout,
                cout,
                context_dim,
                NO_RESAMPLE,
                (None, None, "down", None) if (down and i == num_blocks - 1) else NO_RESAMPLE,
                cout,
            )
            for i in range(num_blocks)
        )

    def forward(self, x, embed, context, context_mask, temporal_embed, num_frames, num_temporal_groups):
        x = self.self_attention_block(x, embed)
        x = self.temporal_attention_block(x, embed, temporal_embed, num_frames)
        for in_res, attention, out_res, in_temporal, out_temporal in self.resnet_attn_blocks:
            x = in_res(x, embed, num_temporal_groups)
            x = in_temporal(x, embed, num_frames)
            x = attention(x, embed, context, context_mask)
            x = out_res(x, embed, num_temporal_groups)
            x = out_temporal(x, embed, num_frames)
        return x


class UpLevel(nn.Module):
    """Residual groups (the first may double the size), then temporal and self-attention."""

    def __init__(
        self,
        cfg: UNetConfig,
        cin: int,
        skip: int,
        cout: int,
        context_dim,
        num_blocks: int,
        up: bool,
        self_attention: bool,
    ) -> None:
        super().__init__()
        channels = ([(cin + skip, cin)] + [(cin, cin)] * (num_blocks - 2) + [(cin, cout)])[:num_blocks]
        self.resnet_attn_blocks = nn.ModuleList(
            _residual_group(
                cfg,
                c_in,
                c_in,
                c_out,
                context_dim,
                (None, "up", None, None) if (up and i == 0) else NO_RESAMPLE,
                NO_RESAMPLE,
                c_in,
            )
            for i, (c_in, c_out) in enumerate(channels)
        )
        self.self_attention_block, self.temporal_attention_block = _attention_blocks(
            cfg, cout, self_attention
        )

    def forward(self, x, embed, context, context_mask, temporal_embed, num_frames, num_temporal_groups):
        for in_res, attention, out_res, in_temporal, out_temporal in self.resnet_attn_blocks:
            x = in_temporal(x, embed, num_frames)
            x = in_res(x, embed, num_temporal_groups)
            x = attention(x, embed, context, context_mask)
            x = out_temporal(x, embed, num_frames)
            x = out_res(x, embed, num_temporal_groups)
        x = self.temporal_attention_block(x, embed, temporal_embed, num_frames)
        return self.self_attention_block(x, embed)


class UNet3D(nn.Module):
    """Denoiser for keyframe latents (epsilon) or interpolated in-between latents (v)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        init = cfg.init_channels or cfg.model_channels
        e = cfg.time_embed_dim
        self.to_time_embed = embedding_mlp(init, e)
        if cfg.context_dim is not None:
            self.feature_pooling = AttentionPooling(e, cfg.context_dim, cfg.head_dim)
        if cfg.num_frames is not None:
            self.to_temporal_embed = embedding_mlp(init, e)
        if cfg.text_frame_embed:
            self.text_frame_embed = text_frame_mlp(e)
        if cfg.interpolation:
            self.perturbation_to_time_embed = embedding_mlp(init, e)
            self.time_embed_merge = nn.Parameter(torch.zeros(1))
            self.skip_merge = nn.Parameter(torch.zeros(1))
            self.skip_embeddings = nn.Embedding(20, e)

        self.in_layer = nn.Conv2d(cfg.num_channels, init, kernel_size=3, padding=1)
        dims = [init, *(cfg.model_channels * m for m in cfg.dim_mult)]
        in_out = list(zip(dims[:-1], dims[1:], strict=True))
        if cfg.position_embed:
            self.position_embed = nn.ModuleList(position_projection(cin) for cin, _ in in_out)
        levels = len(in_out)
        text_dims = [cfg.context_dim if cross else None for cross in cfg.add_cross_attention]
        self.down_samples = nn.ModuleList(
            DownLevel(
                cfg, cin, cout, text_dims[i], cfg.num_blocks[i], i != levels - 1, cfg.add_self_attention[i]
            )
            for i, (cin, cout) in enumerate(in_out)
        )
        skip_dims = [cout if i != levels - 1 else 0 for i, (_, cout) in enumerate(in_out)]
        self.up_samples = nn.ModuleList(
            UpLevel(
                cfg,
                cout,
                skip_dims[i],
                cin,
                text_dims[i],
                cfg.num_blocks[i],
                j != 0,
                cfg.add_self_attention[i],
            )
            for j, (i, (cin, cout)) in enumerate(reversed(list(enumerate(in_out))))
        )
        self.out_layer = nn.Sequential(
            nn.GroupNorm(cfg.groups, init),
            nn.SiLU(),
            nn.Conv2d(init, cfg.out_channels, kernel_size=3, padding=1),
        )

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        temporal_positions: torch.Tensor | None = None,
        skip_frames: torch.Tensor | None = None,
        num_temporal_groups: int | None = None,
        num_frames: int | None = None,
    ) -> torch.Tensor:
        """Predict noise (keyframes) or v (interpolation) for a batch of frames.

        ``time`` is the model timestep (step index x 1000 // steps); ``temporal_positions`` are raw
        frame positions, one per row; ``num_frames`` defaults to the configured keyframe count.
        """
        cfg = self.config
        embed = self.to_time_embed(time)
        if context is not None:
            embed = self.feature_pooling(embed, context, context_mask)
        temporal_embed = None
        if temporal_positions is not None:
            temporal_embed = self.to_temporal_embed(temporal_positions)
            if cfg.text_frame_embed:
                mixed = self.text_frame_embed(torch.cat([temporal_embed, embed], dim=1))
                embed, temporal_embed = embed + mixed, temporal_embed + mixed
        if cfg.interpolation and num_temporal_groups is not None:
            zero_time = torch.zeros(x.shape[0], device=x.device)
            perturbation = self.perturbation_to_time_embed(zero_time)
            embed = self.time_embed_merge * perturbation + (1 - self.time_embed_merge) * embed
            embed = self.skip_merge * self.skip_embeddings(skip_frames) + embed
        if cfg.num_frames is not None:
            num_frames = num_frames or cfg.num_frames
            if x.shape[0] % num_frames:
                raise ValueError(f"num_frames: batch of {x.shape[0]} rows is not a multiple of {num_frames}")
            if temporal_embed is None:
                raise ValueError("temporal_positions: required by a keyframe (video) U-Net")

        x = self.in_layer(x)
        args = (embed, context, context_mask, temporal_embed, num_frames, num_temporal_groups)
        skips = []
        for i, level in enumerate(self.down_samples):
            if cfg.position_embed:
                x = x + self.position_embed[i](position_features(*x.shape[-2:], x.dtype, x.device))
            x = self._run_level(level, x, args)
            if i != len(self.down_samples) - 1:
                skips.append(x)
        for i, level in enumerate(self.up_samples):
            if i != 0:
                x = torch.cat([x, skips.pop()], dim=1)
            x = self._run_level(level, x, args)
        return self.out_layer(x)

    gradient_checkpointing: bool = False

    def _run_level(self, level: nn.Module, x: torch.Tensor, args: tuple) -> torch.Tensor:
        """Run one level; under gradient checkpointing its activations are recomputed in backward."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(level, x, *args, use_reentrant=False)
        return level(x, *args)


def text_frame_mlp(embed_dim: int) -> nn.Sequential:
    """(frame-position embedding, time+text embedding) -> an embedding of both, starting at zero.

    The released keyframe U-Net gives frame positions only to its temporal-attention norms and the text
    only through cross-attention and a pooled vector, so nothing states "frame 0 of a rightward clip":
    a small model trained on CPU never learned direction words without it. Zero-initialised, so adding
    it to a trained model leaves its output unchanged until training moves it.
    """
    mlp = nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp


POSITION_FREQUENCIES = (1, 2)
POSITION_CHANNELS = 2 + 4 * len(POSITION_FREQUENCIES)


def position_features(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[1, C, H, W] coordinates of each pixel centre in [-1, 1] and their sines and cosines.

    Convolutions only see neighbourhoods, so a small U-Net can hardly tell the left of a frame from its
    right; placing an object where its words say ("moving right" starts on the left) needs that.
    """
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    features = [x, y]
    for k in POSITION_FREQUENCIES:
        features += [torch.sin(torch.pi * k * x), torch.cos(torch.pi * k * x)]
        features += [torch.sin(torch.pi * k * y), torch.cos(torch.pi * k * y)]
    return torch.stack(features)[None].to(dtype)


def position_projection(channels: int) -> nn.Conv2d:
    """Coordinate features -> ``channels``, zero-initialised so a grown model keeps its output."""
    conv = nn.Conv2d(POSITION_CHANNELS, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


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
