"""Full-size structure check: our networks, built on the meta device from the release presets, have
exactly the parameter names and shapes of the official constructors at the released sizes.

The manifest ``tests/data/official_structure.json.gz`` was written by
``tools/official_structure_manifest.py`` from the official code (not a dependency of the tests).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from fusionframes.config import UNetConfig, preset
from fusionframes.io.official_kv11 import interpolation_unet_config, keyframe_unet_config
from fusionframes.models import MoVQ, UNet3D

MANIFEST = Path(__file__).parent / "data" / "official_structure.json.gz"
# Parameters of the released networks (the official constructors at the released sizes).
EXPECTED_PARAMETERS = {
    ("kandinsky-video-1.0", "keyframe_unet"): 4_143_739_012,
    ("kandinsky-video-1.0", "interpolation_unet"): 3_872_572_046,
    ("kandinsky-video-1.0", "movq"): 270_603_567,
    ("kandinsky-video-1.1", "keyframe_unet"): 4_149_077_956,
    ("kandinsky-video-1.1", "interpolation_unet"): 3_979_941_530,
    ("kandinsky-video-1.1", "movq"): 270_603_567,
    ("kandinsky-video-1.1", "video_movq"): 666_131_275,
}


def official() -> dict:
    with gzip.open(MANIFEST, "rt") as handle:
        return json.load(handle)


def build(release: str, network: str) -> nn.Module:
    config = preset(release)
    with torch.device("meta"):
        if network.endswith("unet"):
            return UNet3D(getattr(config, network))
        return MoVQ(getattr(config, network))


@pytest.mark.parametrize(("release", "network"), sorted(EXPECTED_PARAMETERS))
def test_meta_structure_matches_official(release: str, network: str) -> None:
    expected = official()[release][network]
    ours = {name: list(t.shape) for name, t in build(release, network).state_dict().items()}
    missing = sorted(set(expected) - set(ours))
    extra = sorted(set(ours) - set(expected))
    assert not missing and not extra, (
        f"missing {missing[:5]} ({len(missing)}), extra {extra[:5]} ({len(extra)})"
    )
    wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert not wrong, f"shape mismatches: {dict(list(wrong.items())[:5])}"
    total = sum(torch.Size(s).numel() for s in ours.values())
    assert total == EXPECTED_PARAMETERS[(release, network)]


def test_video_decoder_is_the_released_556m() -> None:
    """The 1.1 video MoVQ's decoder alone is the 556M network its README names."""
    decoder = build("kandinsky-video-1.1", "video_movq").decoder
    assert round(sum(p.numel() for p in decoder.parameters()) / 1e6) == 557  # 556.6M


# The small one-group-per-level configuration of tools/official_structure_manifest.py (ONE_BLOCK).
ONE_BLOCK = {
    "model_channels": 8,
    "init_channels": 8,
    "time_embed_dim": 16,
    "context_dim": 16,
    "groups": 4,
    "head_dim": 8,
    "expansion_ratio": 2,
    "compression_ratio": 2,
    "dim_mult": [1, 2, 4],
    "num_blocks": [1, 1, 2],
    "add_cross_attention": [False, True, True],
    "add_self_attention": [False, True, True],
}


def one_block_config(release: str, network: str) -> UNetConfig:
    if release == "kandinsky-video-1.1":
        if network == "one_block_keyframe_unet":
            extra = {"num_channels": 9, "out_channels": 4, "noise_augmentation": True, "motion_score": True}
            return keyframe_unet_config({**ONE_BLOCK, **extra}, num_frames=4)
        return interpolation_unet_config({**ONE_BLOCK, "num_channels": 20, "out_channels": 12})
    if network == "one_block_keyframe_unet":
        return UNetConfig.from_dict({**ONE_BLOCK, "num_channels": 4, "out_channels": 4, "num_frames": 4})
    return UNetConfig.from_dict({**ONE_BLOCK, "num_channels": 20, "out_channels": 12, "interpolation": True})


@pytest.mark.parametrize("release", ["kandinsky-video-1.0", "kandinsky-video-1.1"])
@pytest.mark.parametrize("network", ["one_block_keyframe_unet", "one_block_interpolation_unet"])
def test_one_block_per_level_is_accepted_like_the_official_constructor(release: str, network: str) -> None:
    """The official constructor takes ``num_blocks`` 1 (one residual group); so do we, same layout."""
    expected = official()[release][network]
    with torch.device("meta"):
        unet = UNet3D(one_block_config(release, network))
    assert {k: list(t.shape) for k, t in unet.state_dict().items()} == expected


def test_num_blocks_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="num_blocks"):
        UNetConfig.from_dict({**ONE_BLOCK, "num_blocks": [0, 1, 2]})
