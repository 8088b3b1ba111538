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

import torch
from torch import nn

from fusionframes.config import UNetConfig
from fusionframes.models.layers import SinusoidalPosEmb, embedding_mlp, use_fast_convs
from fusionframes.models.unet_blocks import (
    AttentionBlock,
    AttentionPooling,
    GroupAttentionBlock,
    ResNetBlock,
    TemporalAttentionBlock,
    TemporalBlend,
    TemporalInputs,
    TemporalResNetBlock,
    optional_block,
)

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
            optional_block(
                context_dim is not None,
                lambda: AttentionBlock(cmid, e, context_dim, g, cfg.head_dim, cfg.expansion_ratio),
            ),
            ResNetBlock(cmid, cout, e, g, r, second_resample, temporal, new),
            optional_block(video, lambda: TemporalResNetBlock(temporal_channels, e, g, r, frame_conditioned)),
            optional_block(video, lambda: TemporalResNetBlock(temporal_channels, e, g, r, frame_conditioned)),
        ]
    )


def _attention_blocks(cfg: UNetConfig, channels: int, self_attention: bool) -> tuple[nn.Module, nn.Module]:
    """The level's spatial self-attention and its temporal attention (keyframes, or 1.1 interpolation)."""
    e, g = cfg.time_embed_dim, cfg.groups
    spatial = optional_block(
        self_attention, lambda: AttentionBlock(channels, e, None, g, cfg.head_dim, cfg.expansion_ratio)
    )
    if cfg.interpolation:
        temporal = optional_block(
            self_attention and cfg.temporal_layers == "1.1" and cfg.add_temporal_attention,
            lambda: GroupAttentionBlock(channels, e, g, cfg.head_dim, cfg.expansion_ratio),
        )
    else:
        temporal = optional_block(
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
        if config.text_frame_embed and type(self) is UNet3D:
            raise ValueError(
                "UNetConfig.text_frame_embed: not part of the released U-Net; build it with "
                "fusionframes.models.build_unet"
            )
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
        self._add_frame_conditioning(e)
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
            self.temporal_conv_in = optional_block(new, lambda: TemporalBlend(init))
            self.temporal_conv_out = optional_block(new, lambda: TemporalBlend(init))
        use_fast_convs(self)

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
        """Frame embeddings of a keyframe U-Net (and the time embedding, as :meth:`_condition_frames`
        leaves it)."""
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
        embed, frame_embed = self._condition_frames(embed, frame_embed)
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

    def _add_frame_conditioning(self, embed_dim: int) -> None:
        """Extension point: the released networks have no layers here (see
        :class:`fusionframes.models.builtin_extension.TextFrameUNet3D`). Called where such layers are
        built, so that their parameters keep their place in the module order."""

    def _condition_frames(
        self, embed: torch.Tensor, frame_embed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Extension point: the released networks use the time and frame embeddings as they are."""
        return embed, frame_embed

    gradient_checkpointing: bool = False

    def _run_level(self, level: nn.Module, x: torch.Tensor, args: tuple) -> torch.Tensor:
        """Run one level; under gradient checkpointing its activations are recomputed in backward."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(level, x, *args, use_reentrant=False)
        return level(x, *args)
