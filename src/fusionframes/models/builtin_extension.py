"""The built-in model's one addition to the released keyframe U-Net: a text-aware frame embedding.

The released keyframe U-Net gives frame positions only to its temporal-attention norms and the text
only through cross-attention and a pooled vector, so nothing states "frame 0 of a rightward clip"; a
small model trained on a CPU never learned direction words without that. :class:`TextFrameUNet3D`
adds an MLP of (frame-position embedding, time + text embedding) to the embedding every norm sees
(``UNetConfig.text_frame_embed``). Its last layer starts at zero, so growing it into a trained model
leaves the output unchanged until training moves it. Parameter names (``text_frame_embed.*``) are the
ones model folders store.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionframes.config import UNetConfig
from fusionframes.models.unet import UNet3D


def text_frame_mlp(embed_dim: int) -> nn.Sequential:
    """(frame-position embedding, time + text embedding) -> an embedding of both, starting at zero."""
    mlp = nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp


class TextFrameUNet3D(UNet3D):
    """A keyframe U-Net3D whose every frame embedding also depends on the text (the built-in model)."""

    def _add_frame_conditioning(self, embed_dim: int) -> None:
        self.text_frame_embed = text_frame_mlp(embed_dim)

    def _condition_frames(
        self, embed: torch.Tensor, frame_embed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mixed = self.text_frame_embed(torch.cat([frame_embed, embed], dim=1))
        return embed + mixed, frame_embed + mixed


def build_unet(config: UNetConfig) -> UNet3D:
    """The U-Net a config describes: the released class, or the built-in extension when it asks for it."""
    return TextFrameUNet3D(config) if config.text_frame_embed else UNet3D(config)
