"""The Kandinsky Video U-Net3D: a spatial U-Net with temporal layers between its spatial layers.

One class serves the networks of both releases:

* keyframes (``num_frames`` set): temporal 1D-convolution residual blocks after every spatial
  residual block, temporal attention (with frame-position embeddings) next to self-attention. In 1.1
  (``temporal_layers="1.1"``) every temporal norm sees the time + frame embedding, the frame embedding
  may add noise-augmentation and motion-score embeddings, and a second input convolution
  (``image_in_layer``) serves batches of at most two rows: the text-to-image mode of the first frame,
  which runs without the temporal layers;
* interpolation (``interpolation=True``): temporal 3-tap convolutions blended into every spatial
  convolution, running across the interpolation groups of a video, plus a skip-frames embedding. In
  1.1 the blends are weighted per row by ``temporal_mask`` (0 turns them off for the unconditional
  half), attention across groups follows each self-attention, and a perturbation time is embedded.

Frames of one video are consecutive along the batch axis; the number of frames per video is a
forward argument, so any keyframe count works with the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fusionframes.config import UNetConfig
from fusionframes.models.layers import (
    Attention,
    ConditionalGroupNorm,
    SinusoidalPosEmb,
    TemporalAttention,
    TemporalConv,
    channels_time_to_frames,
    embedding_mlp,
    frames_to_channels_time,
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
    mixed = channels_time_to_frames(conv(frames_to_channels_time(x, groups)))
    if mask is not None:
        merge = merge * mask.to(x.dtype)[:, None, None, None]
    return (1 - merge) * x + merge * mixed


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
            self.temporal_post_upsample = _optional(
                new_params and resample == "up", lambda: TemporalBlend(out_channels)
            )
            self.temporal_projection_new = TemporalBlend(out_channels)
            self.temporal_post_downsample = _optional(
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
            self.temporal_post_upsample = _optional("up" in resample, lambda: TemporalBlend(in_channels))
            self.temporal_post_downsample = _optional("down" in resample, lambda: TemporalBlend(out_channels))

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
            out = channels_time_to_frames(
                conv(frames_to_channels_time(activation(norm(out, embed)), temporal.num_frames))
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


def _optional(condition: bool, make) -> nn.Module:
    return make() if condition else Absent()


NO_RESAMPLE = (None, None, None, None)


def _conv_temporal(cfg: UNetConfig) -> str | None:
    """Which temporal blend the interpolation U-Net's convolutions carry (None for keyframe U-Nets)."""
    return cfg.temporal_layers if cfg.interpolation else None


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
    temporal, new = _conv_temporal(cfg), cfg.add_new_temporal_params
    frame_conditioned = cfg.temporal_layers == "1.1"
    return nn.ModuleList(
        [
            ResNetBlock(cin, cmid, e, g, r, first_resample, temporal, new),
            _optional(
                context_dim is not None,
                lambda: AttentionBlock(cmid, e, context_dim, g, cfg.head_dim, cfg.expansion_ratio),
            ),
            ResNetBlock(cmid, cout, e, g, r, second_resample, temporal, new),
            _optional(video, lambda: TemporalResNetBlock(temporal_channels, e, g, r, frame_conditioned)),
            _optional(video, lambda: TemporalResNetBlock(temporal_channels, e, g, r, frame_conditioned)),
        ]
    )


def _attention_blocks(cfg: UNetConfig, channels: int, self_attention: bool) -> tuple[nn.Module, nn.Module]:
    """The level's spatial self-attention and its temporal attention (keyframes, or 1.1 interpolation)."""
    e, g = cfg.time_embed_dim, cfg.groups
    spatial = _optional(
        self_attention, lambda: AttentionBlock(channels, e, None, g, cfg.head_dim, cfg.expansion_ratio)
    )
    if cfg.interpolation:
        temporal = _optional(
            self_attention and cfg.temporal_layers == "1.1" and cfg.add_temporal_attention,
            lambda: GroupAttentionBlock(channels, e, g, cfg.head_dim, cfg.expansion_ratio),
        )
    else:
        temporal = _optional(
            cfg.num_frames is not None and self_attention,
            lambda: TemporalAttentionBlock(
                channels, e, g, cfg.head_dim, cfg.expansion_ratio, cfg.temporal_layers
            ),
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

    def forward(self, x, embed, context, context_mask, temporal: TemporalInputs):
        x = self.self_attention_block(x, embed)
        x = self.temporal_attention_block(x, embed, temporal)
        for in_res, attention, out_res, in_temporal, out_temporal in self.resnet_attn_blocks:
            x = in_res(x, embed, temporal)
            x = in_temporal(x, embed, temporal)
            x = attention(x, embed, context, context_mask)
            x = out_res(x, embed, temporal)
            x = out_temporal(x, embed, temporal)
        return x


class UpLevel(nn.Module):
    """Residual groups (the first may double the size), then temporal and self-attention (1.1
    interpolation: self-attention first)."""

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
        self.self_attention_first = cfg.interpolation

    def forward(self, x, embed, context, context_mask, temporal: TemporalInputs):
        for in_res, attention, out_res, in_temporal, out_temporal in self.resnet_attn_blocks:
            x = in_temporal(x, embed, temporal)
            x = in_res(x, embed, temporal)
            x = attention(x, embed, context, context_mask)
            x = out_temporal(x, embed, temporal)
            x = out_res(x, embed, temporal)
        if self.self_attention_first:
            return self.temporal_attention_block(self.self_attention_block(x, embed), embed, temporal)
        x = self.temporal_attention_block(x, embed, temporal)
        return self.self_attention_block(x, embed)


class UNet3D(nn.Module):
    """Denoiser for keyframe latents (epsilon) or interpolated in-between latents (v)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        init = cfg.init_channels or cfg.model_channels
        e = cfg.time_embed_dim
        release_11 = cfg.temporal_layers == "1.1"
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
            if cfg.merge_perturbation_time_with_context:
                self.time_embed_context_merge = nn.Parameter(torch.zeros(1))
                self.perturbation_time_encoding = SinusoidalPosEmb(cfg.context_dim)
            self.skip_merge = nn.Parameter(torch.zeros(1))
            self.skip_embeddings = nn.Embedding(20, e)
        if cfg.noise_augmentation:
            self.temporal_noise_aug_time_encoding = embedding_mlp(init, e)
        if cfg.motion_score:
            self.temporal_motion_score_encoding = embedding_mlp(init, e)

        self.in_layer = nn.Conv2d(cfg.num_channels, init, kernel_size=3, padding=1)
        if cfg.image_in_layer:
            self.image_in_layer = nn.Conv2d(cfg.num_channels, init, kernel_size=3, padding=1)
        dims = [init, *(cfg.model_channels * m for m in cfg.dim_mult)]
        in_out = list(zip(dims[:-1], dims[1:], strict=True))
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
        if cfg.interpolation and release_11:
            new = cfg.add_new_temporal_params
            self.temporal_conv_in = _optional(new, lambda: TemporalBlend(init))
            self.temporal_conv_out = _optional(new, lambda: TemporalBlend(init))

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
        *,
        noise_aug_time: torch.Tensor | None = None,
        motion_score: torch.Tensor | None = None,
        perturbation_time: torch.Tensor | None = None,
        temporal_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict noise (keyframes) or v (interpolation) for a batch of frames.

        ``time`` is the model timestep; ``temporal_positions`` are raw frame positions, one per row
        (a 1.1 keyframe U-Net without them runs as an image model: the first frame);
        ``num_frames`` defaults to the configured keyframe count. 1.1 keyframes: ``noise_aug_time``
        and ``motion_score`` per row (None leaves the embedding out). 1.1 interpolation:
        ``perturbation_time`` and ``skip_frames`` per row (None: 25 and 1, as the reference) and
        ``temporal_mask`` per row (None: ones).
        """
        cfg = self.config
        if cfg.interpolation and cfg.temporal_layers == "1.1":
            embed, context = self._interpolation_11_embed(
                time, context, context_mask, perturbation_time, skip_frames
            )
        else:
            embed = self.to_time_embed(time)
            if context is not None:
                embed = self.feature_pooling(embed, context, context_mask)
        temporal = TemporalInputs()
        if cfg.num_frames is not None:
            embed, temporal = self._frame_inputs(
                x, embed, temporal_positions, num_frames, noise_aug_time, motion_score
            )
        elif cfg.interpolation and num_temporal_groups is not None:
            if cfg.temporal_layers == "1.0":
                zero_time = torch.zeros(x.shape[0], device=x.device)
                perturbation = self.perturbation_to_time_embed(zero_time)
                embed = self.time_embed_merge * perturbation + (1 - self.time_embed_merge) * embed
                embed = self.skip_merge * self.skip_embeddings(skip_frames) + embed
            if x.shape[0] % num_temporal_groups:
                raise ValueError(
                    f"num_temporal_groups: batch of {x.shape[0]} rows is not a multiple of "
                    f"{num_temporal_groups}"
                )
            temporal = TemporalInputs(groups=num_temporal_groups, mask=temporal_mask)
        elif cfg.interpolation and cfg.temporal_layers == "1.1":
            raise ValueError("num_temporal_groups: required by a 1.1 interpolation U-Net (groups per branch)")

        # 1.1 picks the image input conv by batch size, as its sampler lays batches out (<= 2 rows:
        # the first frame with and without text).
        image_rows = cfg.image_in_layer and x.shape[0] <= 2
        x = (self.image_in_layer if image_rows else self.in_layer)(x)
        if hasattr(self, "temporal_conv_in"):
            x = self.temporal_conv_in(x, temporal)
        args = (embed, context, context_mask, temporal)
        skips = []
        for i, level in enumerate(self.down_samples):
            x = self._run_level(level, x, args)
            if i != len(self.down_samples) - 1:
                skips.append(x)
        for i, level in enumerate(self.up_samples):
            if i != 0:
                x = torch.cat([x, skips.pop()], dim=1)
            x = self._run_level(level, x, args)
        if hasattr(self, "temporal_conv_out"):
            x = self.temporal_conv_out(x, temporal)
        return self.out_layer(x)

    def _frame_inputs(
        self,
        x: torch.Tensor,
        embed: torch.Tensor,
        positions: torch.Tensor | None,
        num_frames: int | None,
        noise_aug_time: torch.Tensor | None,
        motion_score: torch.Tensor | None,
    ) -> tuple[torch.Tensor, TemporalInputs]:
        """Frame embeddings of a keyframe U-Net (and, with text_frame_embed, the mixed time embedding)."""
        cfg = self.config
        if positions is None:
            if cfg.image_in_layer:
                return embed, TemporalInputs()  # 1.1 image mode: spatial layers only
            raise ValueError("temporal_positions: required by a keyframe (video) U-Net")
        num_frames = num_frames or cfg.num_frames
        if x.shape[0] % num_frames:
            raise ValueError(f"num_frames: batch of {x.shape[0]} rows is not a multiple of {num_frames}")
        frame_embed = self.to_temporal_embed(positions)
        if cfg.noise_augmentation and noise_aug_time is not None:
            frame_embed = frame_embed + self.temporal_noise_aug_time_encoding(noise_aug_time)
        if cfg.motion_score and motion_score is not None:
            frame_embed = frame_embed + self.temporal_motion_score_encoding(motion_score)
        if cfg.text_frame_embed:
            mixed = self.text_frame_embed(torch.cat([frame_embed, embed], dim=1))
            embed, frame_embed = embed + mixed, frame_embed + mixed
        mixed_embed = embed + frame_embed if cfg.temporal_layers == "1.1" else None
        return embed, TemporalInputs(num_frames=num_frames, frame_embed=frame_embed, mixed_embed=mixed_embed)

    def _interpolation_11_embed(
        self,
        time: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        perturbation_time: torch.Tensor | None,
        skip_frames: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """1.1 interpolation: time blended with the perturbation time, plus skip frames, then the pooled
        text (which may carry the perturbation time too); 1.0 pooled the text first."""
        rows = time.shape[0]
        if perturbation_time is None:
            perturbation_time = torch.full((rows,), 25.0, device=time.device)
        if skip_frames is None:
            skip_frames = torch.ones(rows, dtype=torch.int32, device=time.device)
        embed = self.to_time_embed(time)
        perturbation = self.perturbation_to_time_embed(perturbation_time)
        embed = self.time_embed_merge * perturbation + (1 - self.time_embed_merge) * embed
        if self.config.merge_perturbation_time_with_context and context is not None:
            code = self.perturbation_time_encoding(perturbation_time)[:, None]
            context = context + self.time_embed_context_merge * code
        embed = self.skip_merge * self.skip_embeddings(skip_frames) + embed
        if context is not None:
            embed = self.feature_pooling(embed, context, context_mask)
        return embed, context

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
