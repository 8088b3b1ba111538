"""MoVQ autoencoder: a VQGAN-style encoder and a decoder whose norms are modulated by the latent.

Why not diffusers' ``VQModel`` (which has the same maths with ``norm_type="spatial"``): the released
``movq.pt`` has no codebook tensors while ``VQModel`` always owns a quantizer, and its attention
weights are 1x1 convolutions where ``VQModel`` uses linear layers. A strict load would need dropped
keys and reshaped tensors on every load; this module loads the file as it is and uses SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionframes.config import MoVQConfig


class SpatialNorm(nn.Module):
    """GroupNorm, optionally modulated per pixel by the (nearest-upsampled) latent ``zq``."""

    def __init__(self, channels: int, zq_channels: int | None, groups: int) -> None:
        super().__init__()
        self.norm_layer = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.conditioned = zq_channels is not None
        if self.conditioned:
            self.conv_y = nn.Conv2d(zq_channels, channels, kernel_size=1)
            self.conv_b = nn.Conv2d(zq_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        normed = F.group_norm(
            x.float(),
            self.norm_layer.num_groups,
            self.norm_layer.weight.float(),
            self.norm_layer.bias.float(),
            self.norm_layer.eps,
        ).to(x.dtype)
        if not self.conditioned:
            return normed
        zq = F.interpolate(zq, size=x.shape[-2:], mode="nearest")
        return normed * self.conv_y(zq) + self.conv_b(zq)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, zq_channels: int | None, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = SpatialNorm(cin, zq_channels, groups)
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.norm2 = SpatialNorm(cout, zq_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, zq)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h, zq))))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections."""

    def __init__(self, channels: int, zq_channels: int | None, groups: int) -> None:
        super().__init__()
        self.norm = SpatialNorm(channels, zq_channels, groups)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x, zq)

        def tokens(conv: nn.Conv2d) -> torch.Tensor:
            return conv(normed).flatten(2).transpose(1, 2)[:, None]  # [B, 1, HW, C]

        out = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v))
        return x + self.proj_out(out[:, 0].transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad: even sizes halve exactly


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _stage() -> nn.Module:
    stage = nn.Module()
    stage.block = nn.ModuleList()
    stage.attn = nn.ModuleList()
    return stage


def _middle(channels: int, zq_channels: int | None, cfg: MoVQConfig) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, zq_channels, cfg.norm_groups, cfg.dropout)
    mid.attn_1 = AttnBlock(channels, zq_channels, cfg.norm_groups)
    mid.block_2 = ResnetBlock(channels, channels, zq_channels, cfg.norm_groups, cfg.dropout)
    return mid


class Encoder(nn.Module):
    def __init__(self, cfg: MoVQConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, kernel_size=3, padding=1)
        self.down = nn.ModuleList()
        res, cin = cfg.resolution, cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            stage, cout = _stage(), cfg.ch * mult
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResnetBlock(cin, cout, None, g, cfg.dropout))
                cin = cout
                if res in cfg.attn_resolutions:
                    stage.attn.append(AttnBlock(cin, None, g))
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = Downsample(cin)
                res //= 2
            self.down.append(stage)
        self.mid = _middle(cin, None, cfg)
        self.norm_out = SpatialNorm(cin, None, g)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels * (2 if cfg.double_z else 1), kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: MoVQConfig) -> None:
        super().__init__()
        g, zq = cfg.norm_groups, cfg.z_channels
        levels = len(cfg.ch_mult)
        cin = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (levels - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, kernel_size=3, padding=1)
        self.mid = _middle(cin, zq, cfg)
        stages: list[nn.Module] = []
        for level in reversed(range(levels)):
            stage, cout = _stage(), cfg.ch * cfg.ch_mult[level]
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResnetBlock(cin, cout, zq, g, cfg.dropout))
                cin = cout
                if res in cfg.attn_resolutions:
                    stage.attn.append(AttnBlock(cin, zq, g))
            if level != 0:
                stage.upsample = Upsample(cin)
                res *= 2
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = SpatialNorm(cin, zq, g)
        self.conv_out = nn.Conv2d(cin, cfg.out_ch, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_1(h, zq)
        h = self.mid.attn_1(h, zq)
        h = self.mid.block_2(h, zq)
        for stage in reversed(self.up):
            for i, block in enumerate(stage.block):
                h = block(h, zq)
                if len(stage.attn):
                    h = stage.attn[i](h, zq)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h, zq)))


class MoVQ(nn.Module):
    """Image <-> latent autoencoder; encoding stops before quantisation, as the diffusion models expect."""

    def __init__(self, config: MoVQConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, kernel_size=1)
        self.decoder = Decoder(config)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> latents ``[B, z, H/f, W/f]``."""
        return self.quant_conv(self.encoder(images))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in about [-1, 1]; the latent itself conditions every decoder norm."""
        return self.decoder(self.post_quant_conv(latents), latents)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))
