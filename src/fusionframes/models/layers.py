"""Building blocks shared by the U-Nets.

Attribute names mirror the official Kandinsky Video modules so that released state dicts load
with a strict key match; the arithmetic uses fused kernels (SDPA) where the official code wrote
attention out by hand.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin/cos features of scalar positions (timesteps or frame positions), ``[B] -> [B, dim]``."""
    half = dim // 2
    rate = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float32) * -rate)
    angles = positions.float()[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class SinusoidalPosEmb(nn.Module):
    """Parameter-free module form of :func:`sinusoidal_embedding` (slot 0 of the embedding MLPs)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        # Not saved; follows module.to(dtype) so the features match the following Linear's dtype.
        self.register_buffer("dtype_probe", torch.zeros(0), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(positions, self.dim).to(self.dtype_probe.dtype)


def embedding_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """Scalar -> sinusoid -> Linear -> SiLU -> Linear, used for time, frame position and perturbation."""
    return nn.Sequential(
        SinusoidalPosEmb(in_dim), nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
    )


class ConditionalGroupNorm(nn.Module):
    """GroupNorm without affine weights whose scale/shift come from an embedding (AdaGN).

    The statistics are computed in float32 even under reduced precision: group variance over
    large maps is where half precision loses most.
    """

    def __init__(self, groups: int, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.groups = groups
        self.context_mlp = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, 2 * channels))
        nn.init.zeros_(self.context_mlp[1].weight)
        nn.init.zeros_(self.context_mlp[1].bias)

    def forward(self, x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        scale, shift = self.context_mlp(embed).chunk(2, dim=1)
        expand = (...,) + (None,) * (x.dim() - 2)
        normed = F.group_norm(x.float(), self.groups).to(x.dtype)
        # One fused pass (normed * (1 + scale) + shift) instead of a multiply and an add over the map.
        return torch.addcmul(shift[expand].to(x.dtype), normed, (scale[expand] + 1.0).to(x.dtype))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, N, H*D] -> [B, H, N, D]``."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, N, D] -> [B, N, H*D]``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Key mask ``[B, J]`` (True = attend) -> additive bias ``[B, 1, 1, J]``.

    A large finite negative (not -inf) keeps a fully masked row finite (uniform weights), as in the
    official masked_fill, instead of producing NaNs.
    """
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias.masked_fill_(~mask.bool(), torch.finfo(dtype).min)
    return bias[:, None, None, :]


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` (cross) or itself (self), via SDPA."""

    def __init__(self, in_channels: int, out_channels: int, context_dim: int, head_dim: int = 64) -> None:
        super().__init__()
        if out_channels % head_dim:
            raise ValueError(f"head_dim: {head_dim} must divide the attention width {out_channels}")
        self.num_heads = out_channels // head_dim
        self.to_query = nn.Linear(in_channels, out_channels, bias=False)
        self.to_key = nn.Linear(context_dim, out_channels, bias=False)
        self.to_value = nn.Linear(context_dim, out_channels, bias=False)
        self.output_layer = nn.Linear(out_channels, out_channels, bias=False)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        query = _split_heads(self.to_query(x), self.num_heads)
        key = _split_heads(self.to_key(context), self.num_heads)
        value = _split_heads(self.to_value(context), self.num_heads)
        bias = None if context_mask is None else mask_to_bias(context_mask, query.dtype)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
        return self.output_layer(_merge_heads(out))


class TemporalAttention(nn.Module):
    """Self-attention along time, independently at every spatial position: ``[B, T, N, C]``."""

    def __init__(self, in_channels: int, out_channels: int, head_dim: int = 64) -> None:
        super().__init__()
        if out_channels % head_dim:
            raise ValueError(f"head_dim: {head_dim} must divide the attention width {out_channels}")
        self.num_heads = out_channels // head_dim
        self.to_query = nn.Linear(in_channels, out_channels, bias=False)
        self.to_key = nn.Linear(in_channels, out_channels, bias=False)
        self.to_value = nn.Linear(in_channels, out_channels, bias=False)
        self.output_layer = nn.Linear(out_channels, out_channels, bias=False)
        nn.init.zeros_(self.output_layer.weight)  # a new temporal layer starts as identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, _ = x.shape

        def heads(proj: nn.Linear) -> torch.Tensor:
            # [B, T, N, H*D] -> [B*N, H, T, D]
            return (
                proj(x)
                .view(b, t, n, self.num_heads, -1)
                .permute(0, 2, 3, 1, 4)
                .reshape(b * n, self.num_heads, t, -1)
            )

        out = F.scaled_dot_product_attention(heads(self.to_query), heads(self.to_key), heads(self.to_value))
        out = out.view(b, n, self.num_heads, t, -1).permute(0, 3, 1, 2, 4).reshape(b, t, n, -1)
        return self.output_layer(out)


def frames_to_channels_time(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[(B*T), C, H, W] -> [B, C, T, H, W]``: frames of one video are consecutive in the batch."""
    bt, c, h, w = x.shape
    return x.view(bt // num_frames, num_frames, c, h, w).transpose(1, 2)


def channels_time_to_frames(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`frames_to_channels_time`."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


class TemporalConv(nn.Conv3d):
    """A ``(k, 1, 1)`` Conv3d (the official layout) run as a ``(k, 1)`` Conv2d over ``[B, C, T, H*W]``.

    Same weights and result, but PyTorch's CPU Conv3d has no oneDNN path for this shape and its backward
    was the largest single cost of a training step; the 2-D form uses the fast kernels.
    :meth:`frames` does the same on the frame layout the U-Nets keep, without transposing to and fro.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, (kernel_size, 1, 1), padding=(kernel_size // 2, 0, 0))

    def forward(self, x: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """``[B, C, T, H, W]``, or with ``num_frames`` the frame layout of :meth:`frames` (through
        ``forward`` so that offload hooks, which wrap only ``forward``, see the call)."""
        if num_frames is not None:
            return self._frames(x, num_frames)
        b, c, t, h, w = x.shape
        weight = self.weight.squeeze(-1)
        out = F.conv2d(x.reshape(b, c, t, h * w), weight, self.bias, padding=(self.padding[0], 0))
        return out.view(b, -1, t, h, w)

    def frames(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``[(B*T), C, H, W] -> [(B*T), O, H, W]`` (see :meth:`_frames`)."""
        return self(x, num_frames=num_frames)

    def _frames(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``[(B*T), C, H, W] -> [(B*T), O, H, W]``, frames of one video consecutive in the batch.

        Every tap is a per-frame matrix product, all taps in one batched product (``[k*O, C]`` per
        frame), then tap j of frame t is added to output frame t - j + k // 2: the convolution's
        arithmetic with the zero padding at the video's ends, and no copy into the channels-time layout.
        """
        if not x.is_contiguous() or x.requires_grad:
            return channels_time_to_frames(self(frames_to_channels_time(x, num_frames)))
        bt, c, h, w = x.shape
        k, out_channels = self.kernel_size[0], self.out_channels
        weight = self.weight.view(out_channels, c, k).permute(2, 0, 1).reshape(k * out_channels, c)
        taps = torch.bmm(weight.expand(bt, -1, -1), x.view(bt, c, h * w))  # matmul would copy the weight
        taps = taps.view(bt // num_frames, num_frames, k, out_channels, -1)
        centre = k // 2
        out = taps[:, :, centre]
        if self.bias is not None:
            out = out + self.bias.view(1, 1, -1, 1)
        else:
            out = out.clone()
        for j in range(k):
            shift = j - centre  # output frame t reads input frame t + shift
            if j == centre or abs(shift) >= num_frames:
                continue
            if shift > 0:
                out[:, :-shift] += taps[:, shift:, j]
            else:
                out[:, -shift:] += taps[:, :shift, j]
        return out.reshape(bt, out_channels, h, w)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose 1x1 form runs as one matrix product per image (or one over all pixels for
    channels-last input).

    PyTorch's single-threaded CPU path for 1x1 kernels on small batches (im2col-free but one small GEMM
    per image through the generic convolution code) cost several times the product itself on the U-Nets'
    narrow maps. Same weights and state-dict keys; other kernels go to ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size != (1, 1) or self.stride != (1, 1) or self.padding != (0, 0) or self.groups != 1:
            return super().forward(x)
        return pointwise_conv(x, self.weight, self.bias)


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution of ``[B, C, H, W]`` with ``weight [O, C, 1, 1]``, as a matrix product."""
    b, c, h, w = x.shape
    matrix = weight.view(weight.shape[0], c)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return F.linear(x.permute(0, 2, 3, 1), matrix, bias).permute(0, 3, 1, 2)
    if not x.is_contiguous():
        return F.conv2d(x, weight, bias)
    flat = x.view(b, c, h * w)
    if bias is None:
        out = torch.bmm(matrix.expand(b, -1, -1), flat)
    else:
        out = torch.baddbmm(bias.view(1, -1, 1), matrix.expand(b, -1, -1), flat)
    return out.view(b, -1, h, w)


def use_fast_convs(module: nn.Module) -> nn.Module:
    """Give every plain 1x1 ``nn.Conv2d`` inside ``module`` the :class:`Conv2d` forward (same parameters)."""
    for sub in module.modules():
        if type(sub) is nn.Conv2d and sub.kernel_size == (1, 1):
            sub.__class__ = Conv2d
    return module
