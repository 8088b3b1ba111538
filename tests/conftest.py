"""Shared fixtures: small randomly initialised models made on the fly (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fusionframes.components import build_components
from fusionframes.config import small_config
from fusionframes.io.checkpoints import write_model_folder
from fusionframes.text.tokenizer import make_text_encoder_folder

CAPTIONS = [
    "a red circle moving right on a gray background",
    "a blue square moving left on a white background",
    "two stars, a green one falling and a yellow one rising, black background",
    "a purple triangle rotating slowly on a teal background",
    "an orange circle growing quickly on a navy background",
]


def tiny_config():
    """Four keyframes at 64x64: every U-Net level and temporal block, at a few thousand parameters."""
    return small_config(
        channels=8,
        context_dim=16,
        num_frames=4,
        levels=2,
        groups=4,
        head_dim=8,
        movq_channels=8,
        movq_levels=3,
        size=64,
    )


def make_tiny_model(root: Path, seed: int = 0) -> Path:
    text_dir = make_text_encoder_folder(
        CAPTIONS * 4, root / "t5", vocab_size=60, d_model=16, num_layers=1, num_heads=2, d_ff=32, seed=seed
    )
    torch.manual_seed(seed)
    components = build_components(tiny_config(), text_dir, name="tiny-test")
    # Zero-initialised output layers would make a random model output constants; perturb them.
    with torch.no_grad():
        for p in components.keyframe_unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for p in components.interpolation_unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return write_model_folder(components, root / "model", text_encoder_dir=text_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))
