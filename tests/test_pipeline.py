"""End-to-end generation on small random models: frame counts, sizes, seeds, negative prompts, inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusionframes import TextToVideoPipeline
from fusionframes.components import build_components
from fusionframes.config import preset
from fusionframes.io.checkpoints import load_model_folder, write_model_folder

FAST = {"num_inference_steps": 2, "interpolation_steps": 2, "progress": False}


@pytest.fixture(scope="module")
def pipe(tiny_model_dir) -> TextToVideoPipeline:
    return TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")


@pytest.mark.parametrize(
    "fps, frames", [("low", 4), ("medium", 13), pytest.param("high", 49, marks=pytest.mark.slow)]
)
def test_frame_counts_and_constant_duration(pipe, fps: str, frames: int) -> None:
    out = pipe("a red circle moving right", fps=fps, seed=0, output_type="np", **FAST)
    assert out.frames.shape == (frames, 64, 64, 3) and out.frames.dtype == np.uint8
    stride = {"low": 1, "medium": 4, "high": 16}[fps]
    assert out.keyframe_indices == list(range(0, frames, stride))
    # Keyframes span the same time at every fps setting: (N - 1) / base_fps seconds.
    assert math.isclose((frames - 1) / out.fps, (4 - 1) / pipe.config.sampling.base_fps)


@pytest.mark.slow
def test_non_square_and_output_types(pipe) -> None:
    pil = pipe("a blue square", width=96, height=64, seed=1, output_type="pil", **FAST)
    assert len(pil.frames) == 13 and pil.frames[0].size == (96, 64)
    pt = pipe("a blue square", width=96, height=64, seed=1, output_type="pt", **FAST)
    assert pt.frames.shape == (13, 3, 64, 96) and 0.0 <= pt.frames.min() and pt.frames.max() <= 1.0
    assert np.array_equal(np.asarray(pil.frames[3]), (pt.frames[3].permute(1, 2, 0).numpy() * 255).round())


@pytest.mark.slow
def test_seed_reproducible_and_different_seeds_differ(pipe) -> None:
    a = pipe("a green star", seed=7, output_type="pt", **FAST).frames
    b = pipe("a green star", seed=7, output_type="pt", **FAST).frames
    c = pipe("a green star", seed=8, output_type="pt", **FAST).frames
    g = pipe("a green star", generator=torch.Generator().manual_seed(7), output_type="pt", **FAST).frames
    assert torch.equal(a, b) and torch.equal(a, g)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_single_step_sampling_gives_finite_frames(pipe, sampler: str) -> None:
    out = pipe(
        "a green star",
        seed=1,
        output_type="pt",
        num_inference_steps=1,
        interpolation_steps=1,
        scheduler=sampler,
        progress=False,
    )
    assert torch.isfinite(out.frames).all() and out.frames.std() > 0


@pytest.mark.slow
def test_random_seed_is_recorded(pipe) -> None:
    out = pipe("a green star", output_type="pt", **FAST)
    again = pipe("a green star", seed=out.settings.seed, output_type="pt", **FAST)
    assert torch.equal(out.frames, again.frames)


@pytest.mark.slow
def test_negative_prompt_changes_output(pipe) -> None:
    a = pipe("a red circle", seed=3, output_type="pt", **FAST).frames
    b = pipe("a red circle", negative_prompt="blue background", seed=3, output_type="pt", **FAST).frames
    assert (a - b).abs().max() > 1e-3


@pytest.mark.slow
def test_guidance_zero_ignores_negative_prompt(pipe) -> None:
    a = pipe("a red circle", seed=3, guidance_scale=0.0, output_type="pt", **FAST).frames
    b = pipe(
        "a red circle", negative_prompt="blue", seed=3, guidance_scale=0.0, output_type="pt", **FAST
    ).frames
    assert torch.allclose(a, b, atol=1e-5)


def test_long_prompt_warns_and_truncates(pipe) -> None:
    with pytest.warns(UserWarning, match="truncated to 128"):
        out = pipe("red circle " * 200, fps="low", seed=0, output_type="np", **FAST)
    assert out.frames.shape[0] == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": ""}, "prompt: must be a non-empty string"),
        ({"prompt": "   "}, "prompt: must be a non-empty string"),
        ({"width": 100}, "width: 100 is not allowed; use a multiple of 8 between 64 and 2048"),
        ({"height": 4096}, "height: 4096 is not allowed"),
        ({"height": 32}, "height: 32 is not allowed"),
        ({"fps": "ultra"}, "fps: unknown 'ultra'; allowed: low, medium, high"),
        ({"num_inference_steps": 0}, "num_inference_steps: must be >= 1"),
        ({"guidance_scale": float("nan")}, "guidance_scale: must be a finite number"),
        ({"guidance_scale": -1.0}, "guidance_scale: must be >= 0.0"),
        ({"interpolation_guidance_scale": float("inf")}, "interpolation_guidance_scale: must be a finite"),
        ({"output_type": "gif"}, "output_type: unknown 'gif'"),
        ({"scheduler": "euler-magic"}, "scheduler: unknown 'euler-magic'"),
    ],
)
def test_bad_inputs(pipe, kwargs: dict, message: str) -> None:
    args = {"prompt": "a red circle", **FAST, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe(args.pop("prompt"), **args)


@pytest.mark.parametrize(
    "device, dtype, message",
    [
        ("tpu", "auto", "device: unknown 'tpu'"),
        ("banana", "auto", "device: unknown 'banana'"),
        ("cpu", "float8", "dtype: unknown 'float8'"),
    ],
)
def test_bad_device_or_dtype_fails_before_loading(tiny_model_dir, device, dtype, message) -> None:
    with pytest.raises(ValueError, match=message):
        TextToVideoPipeline.from_pretrained(tiny_model_dir / "does-not-matter", device=device, dtype=dtype)


@pytest.mark.slow
def test_model_folder_round_trip_gives_identical_video(pipe, tiny_model_dir, tmp_path) -> None:
    copy = write_model_folder(
        load_model_folder(tiny_model_dir), tmp_path / "copy", text_encoder_dir=tiny_model_dir / "text_encoder"
    )
    other = TextToVideoPipeline.from_pretrained(copy, device="cpu", dtype="float32")
    a = pipe("a red circle", seed=5, output_type="pt", **FAST).frames
    b = other("a red circle", seed=5, output_type="pt", **FAST).frames
    assert torch.equal(a, b)


@pytest.mark.slow
def test_bfloat16_runs_and_stays_close(pipe, tiny_model_dir) -> None:
    low = TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="bfloat16")
    a = pipe("a red circle", fps="low", seed=5, output_type="pt", **FAST).frames
    b = low("a red circle", fps="low", seed=5, output_type="pt", **FAST).frames
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert (a - b).abs().mean() < 0.1


def test_released_architecture_parameter_counts_on_meta() -> None:
    """The kandinsky-video-1.0 preset builds the released sizes (no memory used on the meta device)."""
    components = build_components(preset("kandinsky-video-1.0"), "google/flan-ul2", device="meta")
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in components.networks().items()}
    assert 3.9e9 < counts["keyframe_unet"] < 4.2e9  # "4.0B" in the release notes
    assert 2.5e8 < counts["movq"] < 2.8e8
    # Exact values of the official constructor (same modules and shapes, verified by parity on small configs).
    assert counts == {
        "keyframe_unet": 4_143_739_012,
        "interpolation_unet": 3_872_572_046,
        "movq": 270_603_567,
        "text_projection": 16_785_408,
    }


def with_thresholding(config, value):
    """``config`` with both U-Nets trained with x0 thresholding ``value``."""
    import dataclasses

    def unet(c):
        return dataclasses.replace(c, trained_with=dataclasses.replace(c.training, thresholding=value))

    return dataclasses.replace(
        config, keyframe_unet=unet(config.keyframe_unet), interpolation_unet=unet(config.interpolation_unet)
    )


@pytest.mark.slow
def test_thresholding_can_be_turned_off(tiny_model_dir) -> None:
    """Models whose latents exceed [-1, 1] need x0 left alone; the official 0.98 quantile stays default."""

    from fusionframes.diffusion.parameterisation import threshold_x0

    x0 = torch.linspace(-4, 4, 64).reshape(1, 64)
    assert torch.equal(threshold_x0(x0, None), x0)
    assert threshold_x0(x0, 0.98).abs().max() <= 1.0
    assert torch.equal(threshold_x0(x0, 3.0), x0.clamp(-3, 3))  # static clamp, no rescaling

    default = TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    assert default.config.keyframe_unet.training.thresholding == 0.98
    free = TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    free.config = with_thresholding(free.config, None)
    a = default("a red star", seed=3, output_type="pt", **FAST).frames
    b = free("a red star", seed=3, output_type="pt", **FAST).frames
    assert (a - b).abs().max() > 1e-4


@pytest.mark.slow
def test_static_clamp_model_rejects_samplers_that_cannot_clamp(tiny_model_dir) -> None:

    pipe = TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    pipe.config = with_thresholding(pipe.config, 4.0)
    with pytest.raises(ValueError, match="scheduler: 'dpm\\+\\+2m' cannot clamp x0 to \\+-4"):
        pipe("a red star", scheduler="dpm++2m", **FAST)
    for sampler in ("ddpm", "ddim"):
        out = pipe("a red star", scheduler=sampler, seed=1, output_type="pt", **FAST)
        assert torch.isfinite(out.frames).all()


@pytest.mark.slow
def test_text_frame_embed_grows_as_identity_then_ties_frames_to_text(pipe, tiny_model_dir, tmp_path) -> None:
    """The extension starts as the same function, then conditions every frame on (position, text), and
    a folder that has it round-trips through the pipeline."""
    from dataclasses import replace

    from fusionframes.components import with_keyframe_extensions
    from fusionframes.config import UNetConfig

    components = load_model_folder(tiny_model_dir)
    assert components.config.keyframe_unet.text_frame_embed is False  # the released layout by default
    grown = with_keyframe_extensions(load_model_folder(tiny_model_dir), "text_frame_embed")
    assert grown.config.keyframe_unet.text_frame_embed is True
    assert with_keyframe_extensions(grown, "text_frame_embed") is grown
    folder = write_model_folder(grown, tmp_path / "grown", text_encoder_dir=tiny_model_dir / "text_encoder")
    other = TextToVideoPipeline.from_pretrained(folder, device="cpu", dtype="float32")
    a = pipe("a red circle", fps="low", seed=5, output_type="pt", **FAST).frames
    b = other("a red circle", fps="low", seed=5, output_type="pt", **FAST).frames
    assert torch.equal(a, b)  # zero-initialised: same output

    unet = grown.keyframe_unet
    with torch.no_grad():
        unet.text_frame_embed[2].weight.normal_(0, 0.1)
    frames, cfg = 4, grown.config.keyframe_unet
    x = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(0)).repeat(2, 1, 1, 1)
    context = torch.randn(2, 3, cfg.context_dim, generator=torch.Generator().manual_seed(1))
    context = context.repeat_interleave(frames, 0)
    mask = torch.ones(2 * frames, 3, dtype=torch.bool)
    positions = torch.arange(frames).repeat(2) * 8
    with torch.no_grad():
        out = unet(x, torch.full((2 * frames,), 700), context, mask, positions, num_frames=frames)
        unet.text_frame_embed[2].weight.zero_()
        before = unet(x, torch.full((2 * frames,), 700), context, mask, positions, num_frames=frames)
    change = out - before
    assert change.abs().max() > 1e-3  # the new layers are wired into the network
    assert (change[:frames] - change[frames:]).abs().max() > 1e-3  # same frames, other text: other effect

    with pytest.raises(ValueError, match="text_frame_embed: only for a text-conditioned keyframe U-Net"):
        replace(UNetConfig(), text_frame_embed=True)  # no num_frames: a spatial U-Net
    with pytest.raises(ValueError, match="text_frame_embed: only for a text-conditioned keyframe U-Net"):
        UNetConfig(num_frames=4, interpolation=True, text_frame_embed=True)
    with pytest.raises(ValueError, match="names: .*'colour_embed'.* not keyframe extensions"):
        with_keyframe_extensions(grown, "colour_embed")
