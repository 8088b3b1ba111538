"""End to end: the Kandinsky Video 1.1 pipeline on random weights at a tiny 1.1 architecture."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CAPTIONS, tiny_config
from PIL import Image

from fusionframes.components import build_components
from fusionframes.config import ModelConfig
from fusionframes.pipelines.first_frame import decode_image, encode_image
from fusionframes.pipelines.kandinsky11 import (
    MOTION_SCORES,
    KandinskyVideo11Pipeline,
    clip_chunks,
    validate_settings_11,
)
from fusionframes.text.tokenizer import make_text_encoder_folder

PROMPT = CAPTIONS[0]
FAST = {"num_inference_steps": 2, "interpolation_steps": 2, "num_keyframes": 3, "progress": False}


def tiny_config_11() -> ModelConfig:
    """The conftest's tiny model with the 1.1 architecture: 9-channel keyframe U-Net with image mode,
    noise-augmentation and motion embeddings, 1.1 interpolation U-Net, image + temporal MoVQ."""
    base = tiny_config()
    movq = dataclasses.replace(base.movq, first_row_attention_norm=True, attn_resolutions=(16,))
    return dataclasses.replace(
        base,
        keyframe_unet=dataclasses.replace(
            base.keyframe_unet,
            num_channels=9,
            num_frames=12,
            temporal_layers="1.1",
            image_in_layer=True,
            noise_augmentation=True,
            motion_score=True,
        ),
        interpolation_unet=dataclasses.replace(base.interpolation_unet, temporal_layers="1.1"),
        movq=movq,
        video_movq=dataclasses.replace(movq, temporal=True, temporal_attention_block=True),
    )


def make_components(root: Path, seed: int = 0):
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


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> KandinskyVideo11Pipeline:
    components, _ = make_components(tmp_path_factory.mktemp("tiny11"))
    return KandinskyVideo11Pipeline(components, device="cpu", dtype="float32")


def frames_of(pipe, **kwargs) -> np.ndarray:
    return pipe(PROMPT, seed=kwargs.pop("seed", 0), output_type="np", **{**FAST, **kwargs}).frames


@pytest.mark.parametrize(("fps", "count"), [("low", 3), ("medium", 9), ("high", 33)])
def test_text_to_video_every_fps(pipe, fps: str, count: int) -> None:
    stages: list[str] = []
    video = pipe(PROMPT, seed=1, fps=fps, callback=lambda s, i, n: stages.append(s), **FAST)
    assert len(video.frames) == count and video.frames[0].size == (64, 64)
    assert video.keyframe_indices == list(range(0, count, 4 ** ("low", "medium", "high").index(fps)))
    assert stages[0] == "first frame" and "keyframes" in stages and stages[-1] == "decoding"
    assert ("interpolation 2" in stages) == (fps == "high")
    assert video.settings.to_dict()["motion_score"] == MOTION_SCORES["medium"]


def test_seeds_reproduce_and_differ(pipe) -> None:
    a, b, c = frames_of(pipe, seed=3), frames_of(pipe, seed=3), frames_of(pipe, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("motion", [*MOTION_SCORES, 25, 7.5])
def test_every_motion_level_reaches_the_network(pipe, motion) -> None:
    seen: list[torch.Tensor] = []
    hook = pipe.components.keyframe_unet.register_forward_pre_hook(
        lambda module, args, kwargs: (
            seen.append(kwargs["motion_score"]) if "motion_score" in kwargs else None
        ),
        with_kwargs=True,
    )
    try:
        frames = frames_of(pipe, motion=motion, seed=5)
    finally:
        hook.remove()
    score = MOTION_SCORES[motion] if isinstance(motion, str) else motion
    assert seen and all(torch.all(s == score) for s in seen)
    if motion != "medium":
        assert not np.array_equal(frames, frames_of(pipe, motion="medium", seed=5))


def test_both_decoders(pipe) -> None:
    video = frames_of(pipe, decoder="video", fps="medium")
    image = frames_of(pipe, decoder="image", fps="medium")
    assert video.shape == image.shape == (9, 64, 64, 3)
    assert not np.array_equal(video, image)
    # The temporal decoder works on the reference's pieces: T // 4 clips made by torch.chunk.
    assert clip_chunks(9) == 2 and clip_chunks(3) == 1 and clip_chunks(177) == 44


def test_image_decoder_frames_are_independent(pipe) -> None:
    """Decoding frame by frame: the image MoVQ's first-row norm never mixes frames."""
    latents = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    together = pipe.decode_11(latents, "image", progress=False)
    alone = pipe.decode_11(latents[2:], "image", progress=False)
    torch.testing.assert_close(together[2:], alone)


def test_image_to_video_keeps_the_image(pipe) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8))
    stages: list[str] = []
    video = pipe(
        PROMPT,
        image=image,
        seed=2,
        decoder="image",
        keep_first_frame=True,
        output_type="np",
        callback=lambda s, i, n: stages.append(s),
        **FAST,
    )
    assert "first frame" not in stages and video.settings.image_to_video
    movq = pipe.components.movq
    round_trip = np.array(decode_image(movq, encode_image(movq, image, 64, 64)[None]))
    # the first decoded frame is the given image's MoVQ round trip (uint8 truncation: at most 1 apart)
    assert np.abs(video.frames[0].astype(int) - round_trip.astype(int)).max() <= 1
    # by default (as released) frame 0 is the U-Net's own drawing of the conditioned frame
    released = pipe(PROMPT, image=image, seed=2, decoder="image", output_type="np", **FAST).frames
    assert not np.array_equal(released[0], video.frames[0])
    assert np.array_equal(released[1:], video.frames[1:])  # keep_first_frame only swaps frame 0's latent
    assert not np.array_equal(released, frames_of(pipe, seed=2, decoder="image"))  # the image conditions


def test_image_from_path_and_modes(pipe, tmp_path: Path) -> None:
    path = tmp_path / "first.png"
    Image.new("L", (64, 64), 128).save(path)
    a = pipe(PROMPT, image=str(path), seed=0, output_type="np", **FAST).frames
    b = pipe(
        PROMPT, image=Image.new("RGB", (64, 64), (128, 128, 128)), seed=0, output_type="np", **FAST
    ).frames
    assert np.array_equal(a, b)  # a grey L image is converted to RGB as the reference does


def test_negative_prompt_reaches_the_unconditional_rows(pipe) -> None:
    contexts: list[torch.Tensor] = []
    hook = pipe.components.keyframe_unet.register_forward_pre_hook(
        lambda module, args: contexts.append(args[2].clone())
    )
    try:
        with_negative = frames_of(pipe, negative_prompt=CAPTIONS[1])
    finally:
        hook.remove()
    plain = frames_of(pipe)
    assert not np.array_equal(with_negative, plain)
    text = pipe._text_conditioner()
    both, _ = text([PROMPT, CAPTIONS[1]])
    last = contexts[-1]  # keyframes: rows (prompt, negative, negative) x frames
    torch.testing.assert_close(last[3], both[1])
    torch.testing.assert_close(last[0], both[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"motion": "fast"}, "motion: unknown 'fast'"),
        ({"motion": -1}, "motion"),
        ({"motion": float("inf")}, "motion"),
        ({"image": "/nonexistent/first.png"}, "image: cannot read"),
        ({"image": Image.new("F", (64, 64))}, "image: mode 'F'"),
        ({"image": 3}, "image: must be a PIL image"),
        ({"guidance_weight_prompt": float("nan")}, "guidance_weight_prompt"),
        ({"guidance_weight_image": float("inf")}, "guidance_weight_image"),
        ({"key_frame_guidance_scale": "high"}, "key_frame_guidance_scale"),
        ({"interpolation_guidance_scale": float("nan")}, "interpolation_guidance_scale"),
        ({"width": 72}, "width: 72"),
        ({"height": 100}, "height: 100"),
        ({"fps": "ultra"}, "fps: unknown"),
        ({"decoder": "gif"}, "decoder"),
        ({"noise_augmentation": 1000}, "noise_augmentation"),
        ({"num_keyframes": 1}, "num_keyframes"),
        ({"keep_first_frame": "yes"}, "keep_first_frame"),
        ({"output_type": "gif"}, "output_type"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_inputs_fail_before_any_network_runs(pipe, kwargs: dict, message: str) -> None:
    calls: list[int] = []
    hook = pipe.components.keyframe_unet.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=message):
            pipe(PROMPT, **{**FAST, "seed": 0, **kwargs})
    finally:
        hook.remove()
    assert not calls


def test_validation_needs_no_model() -> None:
    settings, image = validate_settings_11(tiny_config_11(), PROMPT, options={"motion": "extreme"}, seed=1)
    assert settings.motion_score == 100 and image is None and settings.num_keyframes == 12
    assert settings.guidance_weight_image == 2.0 and settings.interpolation_guidance_scale == 0.5
    assert settings.num_inference_steps == 50 and settings.interpolation_steps == 10
    with pytest.raises(ValueError, match="decoder"):
        validate_settings_11(tiny_config_11(), PROMPT, options={"decoder": "video"}, decoders=("image",))
    with pytest.warns(UserWarning, match="smaller than the video"):
        validate_settings_11(tiny_config_11(), PROMPT, image=Image.new("RGB", (32, 32)), seed=0)
