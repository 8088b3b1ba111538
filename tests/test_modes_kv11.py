"""Animation and mini-movies with a Kandinsky Video 1.1 model (tiny random 1.1 architecture): frames
drawn and redrawn in the keyframe U-Net's image mode; a movie's ``continue`` transition makes each
later scene image-to-video from the previous scene's last frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CAPTIONS
from PIL import Image

from fusionframes import cli
from fusionframes.pipelines.animation import AnimationPipeline
from fusionframes.pipelines.image_mode11 import IMAGE_MODE_SCALE, ImageMode11, last_steps
from fusionframes.pipelines.kandinsky11 import KEYFRAME_SAMPLER_11, KandinskyVideo11Pipeline
from fusionframes.pipelines.movie import render_movie, validate_movie
from fusionframes.pipelines.movie11 import frame_image

PROMPT = CAPTIONS[0]


@pytest.fixture(scope="module")
def animator(tiny_kv11_dir: Path) -> AnimationPipeline:
    return AnimationPipeline.from_pretrained(tiny_kv11_dir, dtype="float32")


def keyframe_calls(pipe: AnimationPipeline) -> tuple[list[tuple[int, bool]], object]:
    """(rows, had temporal positions) of every keyframe U-Net call, and the hook to remove."""
    calls: list[tuple[int, bool]] = []
    hook = pipe.t2v.components.keyframe_unet.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append(
            (args[0].shape[0], kwargs.get("temporal_positions") is not None)
        ),
        with_kwargs=True,
    )
    return calls, hook


def test_last_steps_are_the_tail_of_the_schedule() -> None:
    schedule = KEYFRAME_SAMPLER_11.schedule(10)
    tail = last_steps(schedule, 3)
    assert tail.timesteps.tolist() == schedule.timesteps[-3:].tolist() and len(tail) == 3
    assert torch.equal(tail.step_prev_alphas, schedule.step_prev_alphas[-3:])
    with pytest.raises(ValueError, match="count: must be in"):
        last_steps(schedule, 11)


@pytest.mark.slow
def test_animation_draws_and_redraws_in_image_mode(animator: AnimationPipeline) -> None:
    assert isinstance(animator.t2v, KandinskyVideo11Pipeline) and isinstance(animator.images, ImageMode11)
    calls, hook = keyframe_calls(animator)
    shapes: list[tuple[int, ...]] = []
    shape_hook = animator.t2v.components.keyframe_unet.register_forward_pre_hook(
        lambda m, args: shapes.append(tuple(args[0].shape[-2:]))
    )
    try:
        out = animator(
            PROMPT,
            seconds=0.5,
            fps=6,
            motion="zoom_in",
            strength=0.5,
            cadence=1,
            steps=2,
            seed=0,
            output_type="pt",
            progress=False,
        )
    finally:
        hook.remove()
        shape_hook.remove()
    assert out.frames.shape == (3, 3, 64, 64) and torch.isfinite(out.frames).all()
    # first frame: 2 steps; two redraws at strength 0.5 of 2 steps: 1 step each; all in image mode
    assert calls == [(2, False)] * 4
    latent = IMAGE_MODE_SCALE * 64 // animator.config.movq.scale_factor  # twice the video's latent size
    assert set(shapes) == {(latent, latent)}
    assert out.keyframe_indices == [0, 1, 2] and out.settings["model"] == "tiny-1.1"


@pytest.mark.slow
def test_a_redraw_changes_the_warp_and_strength_zero_keeps_it(animator: AnimationPipeline) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    run = {"seconds": 0.34, "fps": 6, "motion": "zoom_in", "cadence": 1, "steps": 2, "seed": 0}
    still = animator(PROMPT, image=image, strength=0.0, output_type="pt", progress=False, **run).frames
    redrawn = animator(PROMPT, image=image, strength=0.5, output_type="pt", progress=False, **run).frames
    assert torch.equal(still[0], redrawn[0])  # the init image
    assert (still[1] - redrawn[1]).abs().mean() > 0.01  # the model redrew the warped frame


def test_image_to_image_keeps_size_and_batch(animator: AnimationPipeline) -> None:
    images = animator.images
    assert isinstance(images, ImageMode11)
    prompt = images.encode_prompt(PROMPT)
    pictures = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = images.image_to_image(pictures, prompt, 0.5, 2, 5.0, torch.Generator().manual_seed(0))
    assert out.shape == pictures.shape and torch.isfinite(out).all()
    assert images.image_to_image(pictures, prompt, 0.0, 2, 5.0) is pictures


@pytest.mark.slow
def test_movie_continue_starts_each_scene_from_the_last_frame(
    animator: AnimationPipeline, monkeypatch
) -> None:
    t2v = animator.t2v
    plan = validate_movie(
        t2v.config,
        [PROMPT, CAPTIONS[1]],
        [3.0, 3.0],
        "t2v",
        "continue",
        steps=1,
        interpolation_steps=1,
        fps="low",
        seed=5,
    )
    assert [s.num_keyframes for s in plan.t2v] == [3, 4]  # the continued scene makes one frame more
    seen: list[tuple[object, bool]] = []
    original = KandinskyVideo11Pipeline.generate_11

    def spy(self, settings, image, *args, **kwargs):
        seen.append((image, settings.image_to_video))
        return original(self, settings, image, *args, **kwargs)

    monkeypatch.setattr(KandinskyVideo11Pipeline, "generate_11", spy)
    movie = render_movie(animator, plan, output_type="pt", progress=False)
    assert movie.frames.shape[0] == 6 and movie.scene_starts == [0, 3]
    (first, first_i2v), (second, second_i2v) = seen
    assert first is None and not first_i2v and second_i2v
    # the second scene's condition is the first scene's last frame, as 8-bit pixels
    expected = np.asarray(frame_image(movie.frames[2]))
    assert np.abs(np.asarray(second).astype(int) - expected.astype(int)).max() <= 1
    assert (
        movie.settings["scenes"][1]["image_to_video"]
        and movie.settings["scenes"][1]["model_release"] == "1.1"
    )


def test_movie_11_settings_refuse_other_samplers(tiny_kv11_dir: Path) -> None:
    from fusionframes.io.checkpoints import model_config_for

    config = model_config_for(tiny_kv11_dir)
    with pytest.raises(ValueError, match="scheduler: Kandinsky Video 1.1 samples with its trained DDPM"):
        validate_movie(config, [PROMPT], None, "t2v", scheduler="unipc")
    plan = validate_movie(config, [PROMPT], [3.0], "t2v", guidance_scale=7.0, fps="low", seed=0)
    assert plan.t2v[0].guidance_weight_prompt == 7.0 and plan.t2v[0].num_keyframes == 3


@pytest.mark.slow
@pytest.mark.parametrize("command", ["animate", "movie"])
def test_cli_modes_with_a_11_model(tiny_kv11_dir: Path, tmp_path: Path, command: str, capsys) -> None:
    out = tmp_path / f"{command}.gif"
    if command == "animate":
        argv = ["animate", PROMPT, "--seconds", "0.5", "--fps", "6", "--cadence", "2"]
    else:
        argv = [
            "movie",
            PROMPT,
            CAPTIONS[1],
            "--durations",
            "2,2",
            "--transition",
            "continue",
            "--fps",
            "low",
        ]
        argv += ["--interpolation-steps", "1"]
    argv += [
        "--model",
        str(tiny_kv11_dir),
        "--steps",
        "1",
        "--seed",
        "1",
        "--dtype",
        "float32",
        "-o",
        str(out),
    ]
    assert cli.main(argv) == 0, capsys.readouterr().err
    with Image.open(out) as video:
        assert video.size == (64, 64) and video.n_frames == (3 if command == "animate" else 4)
