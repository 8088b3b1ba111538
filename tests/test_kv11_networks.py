"""Behaviour of the Kandinsky Video 1.1 networks beyond the parity cases: which layers mix which rows,
the first-frame image mode, and decoding long clips in pieces (tiny random networks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fusionframes.config import MoVQConfig, UNetConfig
from fusionframes.models import MoVQ, UNet3D
from fusionframes.models.movq import decode_clip, reference_chunk_sizes

SMALL_UNET = {
    "model_channels": 8,
    "init_channels": 8,
    "time_embed_dim": 16,
    "context_dim": 16,
    "groups": 4,
    "head_dim": 8,
    "expansion_ratio": 2,
    "dim_mult": (1, 2),
    "num_blocks": (1, 2),
    "add_cross_attention": (False, True),
    "add_self_attention": (False, True),
}


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random non-zero weights everywhere (the constructors zero every temporal path); blends at 0.5."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "merge" in name:
                param.fill_(0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return module.eval()


def keyframe_unet() -> UNet3D:
    cfg = UNetConfig(
        **SMALL_UNET,
        num_channels=9,
        out_channels=4,
        num_frames=3,
        temporal_layers="1.1",
        image_in_layer=True,
        noise_augmentation=True,
        motion_score=True,
    )
    return randomise(UNet3D(cfg))


def interpolation_unet() -> UNet3D:
    cfg = UNetConfig(
        **SMALL_UNET, num_channels=20, out_channels=12, interpolation=True, temporal_layers="1.1"
    )
    return randomise(UNet3D(cfg))


def text(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rows, 5, 16), torch.ones(rows, 5, dtype=torch.bool)


@pytest.mark.slow
@torch.no_grad()
def test_image_mode_uses_image_in_layer_by_batch_size() -> None:
    """<= 2 rows run ``image_in_layer`` and no temporal layer (no frame positions needed); 3 rows the
    video input conv, as the 1.1 reference does."""
    unet = keyframe_unet()
    context, mask = text(3)
    x, time = torch.randn(3, 9, 8, 8), torch.full((3,), 500.0)
    two = unet(x[:2], time[:2], context[:2], mask[:2])
    three = unet(x, time, context, mask)
    unet.in_layer.weight.add_(1.0)
    assert torch.equal(unet(x[:2], time[:2], context[:2], mask[:2]), two)
    assert not torch.allclose(unet(x, time, context, mask), three)
    # Rows of the image mode are independent images: row 0 alone equals row 0 of the pair.
    assert torch.allclose(unet(x[:1], time[:1], context[:1], mask[:1]), two[:1], atol=1e-6)


@pytest.mark.slow
@torch.no_grad()
def test_keyframe_embeddings_are_per_row() -> None:
    """Noise level and motion score change only the video whose rows carry them."""
    unet = keyframe_unet()
    context, mask = text(6)
    x, time = torch.randn(6, 9, 8, 8), torch.full((6,), 300.0)
    positions = torch.arange(3).repeat(2).float()
    aug = torch.full((6,), 20, dtype=torch.int32)
    motion = torch.full((6,), 10, dtype=torch.int32)
    base = unet(x, time, context, mask, positions, noise_aug_time=aug, motion_score=motion)
    motion[3:] = 100
    moved = unet(x, time, context, mask, positions, noise_aug_time=aug, motion_score=motion)
    assert torch.equal(moved[:3], base[:3])
    assert not torch.allclose(moved[3:], base[3:])


@torch.no_grad()
@pytest.mark.parametrize("mask_value", [0.0, 1.0])
def test_temporal_mask_switches_off_group_mixing(mask_value: float) -> None:
    """Rows with mask 0 (the unconditional half) get no temporal mixing: changing one group's input
    leaves the other groups of that half unchanged; with mask 1 it reaches them."""
    unet = interpolation_unet()
    groups = 3
    context, mask = text(2 * groups)
    x, time = torch.randn(2 * groups, 20, 8, 8), torch.full((2 * groups,), 700)
    temporal_mask = torch.cat([torch.ones(groups), torch.full((groups,), mask_value)])
    base = unet(x, time, context, mask, num_temporal_groups=groups, temporal_mask=temporal_mask)
    x[groups] += 1.0  # the first group of the second half
    changed = unet(x, time, context, mask, num_temporal_groups=groups, temporal_mask=temporal_mask)
    assert torch.equal(changed[:groups], base[:groups])  # the halves never mix
    others_same = torch.allclose(changed[groups + 1 :], base[groups + 1 :], atol=1e-6)
    assert others_same == (mask_value == 0.0)


def test_interpolation_11_needs_its_groups() -> None:
    unet = interpolation_unet()
    context, mask = text(2)
    with pytest.raises(ValueError, match="num_temporal_groups"):
        unet(torch.randn(2, 20, 8, 8), torch.full((2,), 1), context, mask)


@pytest.mark.parametrize(
    ("flags", "name"),
    [
        ({"noise_augmentation": True, "num_frames": 4}, "noise_augmentation"),  # a 1.0 keyframe U-Net
        ({"image_in_layer": True, "interpolation": True, "temporal_layers": "1.1"}, "image_in_layer"),
        (
            {"add_new_temporal_params": True, "num_frames": 4, "temporal_layers": "1.1"},
            "add_new_temporal_params",
        ),
        ({"temporal_layers": "2.0"}, "temporal_layers"),
    ],
)
def test_release_flags_are_checked(flags: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        UNetConfig(**SMALL_UNET, **flags)


def video_movq() -> MoVQ:
    cfg = MoVQConfig(
        ch=32,
        ch_mult=(1, 1),
        num_res_blocks=1,
        attn_resolutions=(8,),
        resolution=16,
        temporal=True,
        temporal_attention_block=True,
        first_row_attention_norm=True,
    )
    movq = randomise(MoVQ(cfg), seed=1)
    with torch.no_grad():  # keep GroupNorm scales near 1 so activations stay in range
        for name, param in movq.named_parameters():
            if "norm_layer.weight" in name:
                param.fill_(1.0)
    return movq


@torch.no_grad()
def test_reference_chunks_work_for_any_clip_length() -> None:
    """The reference's ``chunk(n // 4)`` fails below four frames; we decode such clips whole."""
    movq = video_movq()
    assert reference_chunk_sizes(9) == [5, 4]
    assert reference_chunk_sizes(3) == [3]
    assert reference_chunk_sizes(16) == [4, 4, 4, 4]
    latents = torch.randn(3, 4, 4, 4)
    assert torch.allclose(decode_clip(movq, latents), movq.decode(latents), atol=1e-6)


@torch.no_grad()
def test_overlapped_windows_soften_the_seams() -> None:
    """Windows cover the clip exactly once or blend; a window as long as the clip is the whole-clip
    decode; overlap brings the frames near each seam closer to the whole-clip decode."""
    movq = video_movq()
    latents = torch.randn(12, 4, 4, 4)
    whole = movq.decode(latents)
    assert torch.allclose(decode_clip(movq, latents, window=12), whole, atol=1e-6)

    def seam_error(overlap: int) -> float:
        pieces = decode_clip(movq, latents, window=6, overlap=overlap)
        return (pieces - whole).flatten(1).norm(dim=1).max().item()

    hard, soft = seam_error(0), seam_error(3)
    assert hard > 1e-3  # the pieces really do differ from one clip
    assert soft < hard


@pytest.mark.parametrize(
    ("window", "overlap", "name"), [(0, 0, "window"), (4, 4, "overlap"), (4, -1, "overlap")]
)
def test_bad_windows_are_refused(window: int, overlap: int, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        decode_clip(video_movq(), torch.randn(5, 4, 4, 4), window=window, overlap=overlap)
