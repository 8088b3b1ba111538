"""MoVQ autoencoder: a VQGAN-style encoder and a decoder whose norms are modulated by the latent.

The same class is Kandinsky Video 1.1's temporal ("video") decoder when ``MoVQConfig.temporal`` /
``temporal_attention_block`` are on: every decoder ResNet block then blends a 3-D convolution over the
clip into both of its convolutions, and attention across frames follows each spatial attention; the
decoded batch is one clip (:func:`decode_clip` decodes long ones in pieces).

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
from fusionframes.models.layers import channels_time_to_frames, frames_to_channels_time, use_fast_convs


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
        if not self.conditioned or zq is None:
            return normed  # 1.1's temporal attention runs its conditioned norm without a latent
        zq = F.interpolate(zq, size=x.shape[-2:], mode="nearest")
        return normed * self.conv_y(zq) + self.conv_b(zq)


class ResnetBlock(nn.Module):
    """Two 3x3 convolutions; with ``temporal`` (a config) each is blended with a 3-D conv over the clip."""

    def __init__(
        self,
        cin: int,
        cout: int,
        zq_channels: int | None,
        groups: int,
        dropout: float,
        temporal: MoVQConfig | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = SpatialNorm(cin, zq_channels, groups)
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.norm2 = SpatialNorm(cout, zq_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, kernel_size=1)
        self.temporal = temporal is not None
        if temporal is not None:
            kernel, padding = temporal.temporal_kernel_size, temporal.temporal_conv_padding
            for i in (1, 2):
                conv = nn.Conv3d(cout, cout, kernel, padding=padding)
                nn.init.zeros_(conv.weight)  # zero blend and zero conv: starts as the image decoder
                nn.init.zeros_(conv.bias)
                setattr(self, f"temporal_merge{i}", nn.Parameter(torch.zeros(1)))
                setattr(self, f"temporal_projection{i}", conv)

    def _blend(self, h: torch.Tensor, i: int, num_frames: int | None) -> torch.Tensor:
        if not self.temporal or num_frames is None:
            return h
        merge = getattr(self, f"temporal_merge{i}")
        conv = getattr(self, f"temporal_projection{i}")
        if torch.is_grad_enabled() and conv.weight.requires_grad and h.device.type == "cpu":
            return (1 - merge) * h + merge * _temporal_conv_as_2d(h, conv, num_frames)
        mixed = conv(frames_to_channels_time(h, num_frames))
        return (1 - merge) * h + merge * channels_time_to_frames(mixed)

    def forward(
        self, x: torch.Tensor, zq: torch.Tensor | None = None, num_frames: int | None = None
    ) -> torch.Tensor:
        h = self._blend(self.conv1(F.silu(self.norm1(x, zq))), 1, num_frames)
        h = self._blend(self.conv2(self.dropout(F.silu(self.norm2(h, zq)))), 2, num_frames)
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


def _temporal_conv_as_2d(h: torch.Tensor, conv: nn.Conv3d, num_frames: int) -> torch.Tensor:
    """``conv`` over the clips of ``h`` ``[(B*T), C, H, W]`` as one 2-D convolution per temporal tap.

    The same sum as the 3-D convolution (equal to float rounding), used while training on a CPU, where
    the 3-D kernels' backward pass is about 3x slower than these 2-D ones.
    """
    kt = conv.kernel_size[0]
    pad_t, pad_h, pad_w = conv.padding  # type: ignore[misc]
    bt, c, height, width = h.shape
    clips = h.view(bt // num_frames, num_frames, c, height, width)
    padded = F.pad(clips, (0, 0, 0, 0, 0, 0, pad_t, pad_t))
    out_frames = num_frames + 2 * pad_t - kt + 1
    out = conv.bias[None, :, None, None]
    for k in range(kt):
        taps = padded[:, k : k + out_frames].reshape(-1, c, height, width)
        out = out + F.conv2d(taps, conv.weight[:, :, k], None, padding=(pad_h, pad_w))
    return out


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


class TemporalAttnBlock(nn.Module):
    """Single-head attention across the frames of a clip at each pixel (1x1-conv projections).

    Its norm has latent-conditioning convolutions, but the 1.1 decoder calls it without the latent, so
    they are loaded and unused, as there.
    """

    def __init__(self, channels: int, zq_channels: int | None, groups: int) -> None:
        super().__init__()
        self.norm = SpatialNorm(channels, zq_channels, groups)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        clips = bt // num_frames
        normed = self.norm(x)

        def tokens(conv: nn.Conv2d) -> torch.Tensor:  # [(B*H*W), 1, T, C]
            out = conv(normed).view(clips, num_frames, c, h * w).permute(0, 3, 1, 2)
            return out.reshape(clips * h * w, 1, num_frames, c)

        out = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v))
        out = out.view(clips, h * w, num_frames, c).permute(0, 2, 3, 1).reshape(bt, c, h, w)
        return x + self.proj_out(out)


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
    stage.temporal_attn = nn.ModuleList()  # stays empty (no keys) in an image decoder
    return stage


def _middle(channels: int, zq_channels: int | None, cfg: MoVQConfig, decoder: bool = False) -> nn.Module:
    temporal = cfg if decoder and cfg.temporal and cfg.temporal_mid_blocks else None
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, zq_channels, cfg.norm_groups, cfg.dropout, temporal)
    mid.attn_1 = AttnBlock(channels, zq_channels, cfg.norm_groups)
    if decoder and cfg.temporal_attention_block:
        mid.temporal_attn_1 = TemporalAttnBlock(channels, zq_channels, cfg.norm_groups)
    mid.block_2 = ResnetBlock(channels, channels, zq_channels, cfg.norm_groups, cfg.dropout, temporal)
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
        self.mid = _middle(cin, zq, cfg, decoder=True)
        self.first_row_attention_norm = cfg.first_row_attention_norm
        temporal = cfg if cfg.temporal else None
        stages: list[nn.Module] = []
        for level in reversed(range(levels)):
            stage, cout = _stage(), cfg.ch * cfg.ch_mult[level]
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResnetBlock(cin, cout, zq, g, cfg.dropout, temporal))
                cin = cout
                if res in cfg.attn_resolutions:
                    stage.attn.append(AttnBlock(cin, zq, g))
                    if cfg.temporal_attention_block:
                        stage.temporal_attn.append(TemporalAttnBlock(cin, zq, g))
            if level != 0:
                stage.upsample = Upsample(cin)
                res *= 2
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = SpatialNorm(cin, zq, g)
        self.conv_out = nn.Conv2d(cin, cfg.out_ch, kernel_size=3, padding=1)

    def forward(
        self,
        z: torch.Tensor,
        zq: torch.Tensor,
        num_frames: int | None = None,
        attention_zq: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``num_frames``: rows per clip for the temporal layers (None: rows are independent images).
        ``attention_zq``: the latent the spatial attention norms see (default ``zq``, or its first row
        with ``first_row_attention_norm``)."""
        if attention_zq is None:
            attention_zq = zq[:1] if self.first_row_attention_norm else zq
        h = self.conv_in(z)
        h = self.mid.block_1(h, zq, num_frames)
        h = self.mid.attn_1(h, attention_zq)
        if hasattr(self.mid, "temporal_attn_1") and num_frames is not None:
            h = self.mid.temporal_attn_1(h, num_frames)
        h = self.mid.block_2(h, zq, num_frames)
        for stage in reversed(self.up):
            for i, block in enumerate(stage.block):
                h = block(h, zq, num_frames)
                if len(stage.attn):
                    h = stage.attn[i](h, attention_zq)
                    if len(stage.temporal_attn) and num_frames is not None:
                        h = stage.temporal_attn[i](h, num_frames)
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
        use_fast_convs(self)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> latents ``[B, z, H/f, W/f]``."""
        return self.quant_conv(self.encoder(images))

    def decode(self, latents: torch.Tensor, attention_latent: torch.Tensor | None = None) -> torch.Tensor:
        """Latents -> images in about [-1, 1]; the latent itself conditions every decoder norm.

        A clip decoder (``config.clip_decoder``) treats the batch as one clip. ``attention_latent``
        ``[1, z, h, w]`` overrides the latent of the spatial attention norms (see :func:`decode_clip`).
        """
        num_frames = latents.shape[0] if self.config.clip_decoder else None
        return self.decoder(self.post_quant_conv(latents), latents, num_frames, attention_latent)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


def reference_chunk_sizes(num_frames: int) -> list[int]:
    """Piece lengths of the 1.1 pipeline's ``latent.chunk(num_frames // 4)``: about four frames each.

    The reference fails below four frames (``chunk(0)``); one piece is used there.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames: must be >= 1, got {num_frames}")
    return [len(piece) for piece in torch.arange(num_frames).chunk(max(1, num_frames // 4))]


def _window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    if num_frames <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, num_frames - window, stride))
    return starts + [num_frames - window]  # the last window ends at the clip's end


def decode_clip(
    movq: MoVQ, latents: torch.Tensor, window: int | None = None, overlap: int = 0
) -> torch.Tensor:
    """Decode a clip ``[T, z, h, w]`` with a clip decoder, in pieces that bound memory.

    ``window`` None: the 1.1 pipeline's pieces (:func:`reference_chunk_sizes`), each decoded as its own
    clip, as the reference does (its seams show every ~4 frames). ``window`` W: windows of W frames
    that share ``overlap`` frames with their neighbour; the shared frames are cross-faded linearly, and
    every window's attention norms see the clip's first latent where a whole-clip decode does
    (``first_row_attention_norm``). Memory
    grows with W, not T. An image decoder decodes row by row in the same pieces.
    """
    frames = latents.shape[0]
    if window is None:
        pieces = latents.split(reference_chunk_sizes(frames))
        return torch.cat([movq.decode(piece) for piece in pieces])
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window: must be an integer >= 1 frames, got {window!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < window:
        raise ValueError(f"overlap: must be an integer in [0, window), got {overlap!r} (window {window})")
    # the attention norms see the first latent only where a whole-clip decode does (1.1's decoder)
    first = latents[:1] if movq.config.first_row_attention_norm else None
    starts = _window_starts(frames, window, overlap)
    ends = [min(start + window, frames) for start in starts]
    out = weights = None
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        piece = movq.decode(latents[start:end], attention_latent=first)
        weight = torch.ones(end - start, dtype=piece.dtype, device=piece.device)
        shared_before = max(0, ends[i - 1] - start) if i else 0
        shared_after = max(0, end - starts[i + 1]) if i + 1 < len(starts) else 0
        if shared_before:  # fade in where the previous window fades out
            weight[:shared_before] *= _ramp(shared_before, weight)
        if shared_after:
            weight[end - start - shared_after :] *= 1 - _ramp(shared_after, weight)
        if out is None:
            out = torch.zeros((frames, *piece.shape[1:]), dtype=piece.dtype, device=piece.device)
            weights = torch.zeros(frames, dtype=piece.dtype, device=piece.device)
        out[start:end] += weight[:, None, None, None] * piece
        weights[start:end] += weight
    return out / weights[:, None, None, None]


def _ramp(length: int, like: torch.Tensor) -> torch.Tensor:
    """(1 .. length) / (length + 1): a fade-in over ``length`` shared frames (never exactly 0 or 1)."""
    return torch.arange(1, length + 1, dtype=like.dtype, device=like.device) / (length + 1)
