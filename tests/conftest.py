"""Shared fixtures: small randomly initialised models made on the fly (no downloads)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fusionframes.components import build_components
from fusionframes.config import ModelConfig, small_config, with_kv11_architecture
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


def tiny_config_11() -> ModelConfig:
    """The tiny model with the Kandinsky Video 1.1 architecture: 9-channel keyframe U-Net with image
    mode, noise-augmentation and motion embeddings, 1.1 interpolation U-Net, image + temporal MoVQ
    (attention at 16x16, so the temporal attention runs), fps low by default."""
    config = with_kv11_architecture(tiny_config(), movq_attention=(16,))
    text = dataclasses.replace(config.text, interpolation_projection=False)  # 1.1 samples without it
    return dataclasses.replace(config, text=text, sampling=dataclasses.replace(config.sampling, fps="low"))


def make_tiny_kv11_components(root: Path, seed: int = 0):
    """Random tiny 1.1 networks (outputs perturbed off zero) and the T5 folder they read."""
    text_dir = make_text_encoder_folder(
        CAPTIONS * 4, root / "t5", vocab_size=60, d_model=16, num_layers=1, num_heads=2, d_ff=32, seed=seed
    )
    torch.manual_seed(seed)
    components = build_components(tiny_config_11(), text_dir, name="tiny-1.1")
    with torch.no_grad():  # zero-initialised outputs and merges would hide every path: perturb them
        for module in (components.keyframe_unet, components.interpolation_unet, components.video_movq):
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return components, text_dir


@pytest.fixture(scope="session")
def tiny_kv11_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FusionFrames model folder of the tiny 1.1 model (what ``convert --release 1.1`` writes)."""
    root = tmp_path_factory.mktemp("tiny11")
    components, text_dir = make_tiny_kv11_components(root)
    return write_model_folder(components, root / "model", text_encoder_dir=text_dir)
