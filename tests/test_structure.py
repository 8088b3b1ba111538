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

from fusionframes.config import preset
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
