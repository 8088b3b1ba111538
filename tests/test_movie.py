"""Mini-movies on a tiny random model: scene checks, frame counts, transitions, continuity, CLI."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from fusionframes import cli
from fusionframes.camera import get_preset, warp
from fusionframes.config import TrainedWith
from fusionframes.diffusion.parameterisation import Anchored, Parameterisation
from fusionframes.diffusion.sampling import sample_ddpm
from fusionframes.io.checkpoints import read_folder_config
from fusionframes.io.video import read_metadata, read_video
from fusionframes.pipelines import text_to_video
from fusionframes.pipelines.animation import AnimationPipeline
from fusionframes.pipelines.movie import (
    crossfade,
    join_scenes,
    keyframes_for,
    make_movie,
    t2v_scene_latents,
    validate_movie,
)
from fusionframes.pipelines.stages import decode_latents
from fusionframes.pipelines.text_to_video import TextToVideoPipeline

T2V = {"mode": "t2v", "steps": 2, "interpolation_steps": 2, "output_type": "pt", "progress": False}
ANIMATE = {"mode": "animate", "fps": 8, "steps": 2, "output_type": "pt", "progress": False}


@pytest.fixture(scope="module")
def pipe(tiny_model_dir: Path) -> AnimationPipeline:
    return AnimationPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def config(tiny_model_dir: Path):
    return read_folder_config(tiny_model_dir)


# --------------------------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scenes": []}, "scenes: need at least one scene"),
        ({"scenes": ["a", ""]}, "scenes: scene 2 must be a non-empty prompt"),
        ({"scenes": ["a", 3]}, "scenes: scene 2 must be a non-empty prompt, got 3"),
        ({"scenes": [{0: "a"}]}, "scenes: scene 1 is a prompt schedule; schedules need mode='animate'"),
        ({"durations": [4]}, "durations: got 1 durations for 2 scenes; give one per scene"),
        ({"durations": [4, 4, 4]}, "durations: got 3 durations for 2 scenes"),
        ({"durations": [4, 0]}, "durations: scene 2 must last > 0 and <= 600 s, got 0"),
        ({"durations": [-1, 4]}, "durations: scene 1 must last > 0"),
        ({"durations": [4, float("nan")]}, "durations: scene 2: must be a finite number"),
        ({"durations": [4, 0.01]}, "durations: scene 2: 0.01 s at 4 fps is less than one frame"),
        ({"durations": "4,4"}, "durations: expected one number per scene, got str"),
        ({"mode": "slideshow"}, "mode: unknown 'slideshow'; allowed: t2v, animate"),
        ({"transition": "wipe"}, "transition: unknown 'wipe'; allowed: cut, crossfade, continue"),
        ({"transition": "crossfade", "crossfade_frames": 0}, "crossfade_frames: must be an integer >= 1"),
        (
            {"transition": "crossfade", "crossfade_frames": 50},
            "crossfade_frames: 50 is longer than the shortest",
        ),
        ({"crossfade_frames": 2}, "crossfade_frames: only used with transition='crossfade', not 'cut'"),
        ({"fps": "ultra"}, "fps: unknown 'ultra'; allowed in t2v mode: low, medium, high"),
        ({"image": "x.png"}, "image: an init image \\(and depth\\) needs mode='animate'"),
        (
            {"transition": "continue", "scheduler": "ddim"},
            "scheduler: transition 'continue' in t2v mode needs",
        ),
        ({"mode": "animate", "fps": "high"}, "fps: animate mode needs frames per second as a number"),
        ({"mode": "animate", "motion": ["zoom_in"]}, "motion: got 1 motions for 2 scenes"),
        ({"mode": "animate", "motion": "spin"}, "motion: unknown preset 'spin'"),
        ({"mode": "animate", "strength": 3}, "strength: must be between 0 and 1"),
        (
            {"mode": "animate", "durations": [4, 0.01]},
            "durations: scene 2: 0.01 s at 24 fps is less than one",
        ),
        ({"seed": -5}, "seed: must be an integer between 0 and 2\\*\\*63 - 1"),
    ],
)
def test_bad_movie_inputs(config, kwargs: dict, message: str) -> None:
    args = {"scenes": ["a red circle", "a blue square"], **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        validate_movie(config, **args)
    assert "\n" not in str(error.value)


def test_many_scenes_and_frame_counts(config) -> None:
    scenes = [f"a red circle {i}" for i in range(40)]  # no scene limit
    plan = validate_movie(config, scenes, [1.0] * 40, mode="animate", fps=12, seed=0)
    assert plan.num_scenes == 40 and plan.scene_frames == (12,) * 40 and plan.num_frames == 480
    assert [a.seed for a in plan.animations[:3]] == [0, 1, 2]  # scene i is seed + i
    # t2v: tiny model at fps "medium" plays at 4 fps; 2.5 s -> 10 frames from 4 keyframes (13 made, trimmed)
    t2v = validate_movie(config, ["a", "b"], [2.5, 1.0], mode="t2v", seed=0)
    assert t2v.fps == 4.0 and t2v.scene_frames == (10, 4)
    assert [s.num_keyframes for s in t2v.t2v] == [4, 2]
    assert keyframes_for(13, 1) == 4 and keyframes_for(14, 1) == 5 and keyframes_for(1, 2) == 2


def test_crossfade_and_join() -> None:
    a, b = torch.zeros(6, 3, 4, 4), torch.ones(5, 3, 4, 4)
    video = crossfade(a, b, 3)
    assert video.shape[0] == 6 + 5 - 3
    torch.testing.assert_close(video[3:6, 0, 0, 0], torch.tensor([0.25, 0.5, 0.75]))
    assert torch.equal(video[:3], a[:3]) and torch.equal(video[6:], b[3:])
    joined, starts = join_scenes([a, b, a], 2)
    assert joined.shape[0] == 6 + 5 + 6 - 4 and starts == [0, 4, 7]


# --------------------------------------------------------------------------------------------- rendering


@pytest.mark.slow
@pytest.mark.parametrize("transition", ["cut", "crossfade", "continue"])
def test_t2v_movie_lengths(pipe, transition: str) -> None:
    out = make_movie(
        ["a red circle", "a blue square"], [1.0, 1.5], transition=transition, pipeline=pipe, seed=1, **T2V
    )
    overlap = 2 if transition == "crossfade" else 0
    assert out.fps == 4.0 and out.scene_lengths == [4, 6]
    assert out.frames.shape == (10 - overlap, 3, 64, 64)
    assert out.scene_starts == [0, 4 - overlap]
    assert out.settings["transition"] == transition and len(out.settings["scenes"]) == 2


@pytest.mark.slow
def test_animate_movie_cut_and_crossfade(pipe) -> None:
    cut = make_movie(["a red circle", "a blue square"], [1.0, 0.5], pipeline=pipe, seed=2, **ANIMATE)
    assert cut.frames.shape[0] == 12 and cut.scene_starts == [0, 8] and cut.scene_lengths == [8, 4]
    fade = make_movie(
        ["a red circle", "a blue square"],
        [1.0, 0.5],
        transition="crossfade",
        crossfade_frames=3,
        pipeline=pipe,
        seed=2,
        **ANIMATE,
    )
    assert fade.frames.shape[0] == 12 - 3 and fade.scene_starts == [0, 5]
    # Same seeds, so the scenes match the cut version; the 3 overlapping frames are blends.
    torch.testing.assert_close(fade.frames[:5], cut.frames[:5])
    w = torch.tensor([0.25, 0.5, 0.75]).view(3, 1, 1, 1)
    torch.testing.assert_close(fade.frames[5:8], (1 - w) * cut.frames[5:8] + w * cut.frames[8:11])


def test_animate_continue_starts_from_the_last_frame(pipe) -> None:
    """At strength 0 scene 2 is the camera path continued from scene 1's last frame."""
    image = torch.rand(1, 3, 64, 64)
    out = make_movie(
        ["a red circle", "a blue square"],
        [0.5, 0.5],
        transition="continue",
        pipeline=pipe,
        image=image,
        strength=0.0,
        cadence=1,
        seed=0,
        **ANIMATE,
    )
    frames = out.frames
    assert frames.shape[0] == 8 and out.scene_starts == [0, 4]
    assert torch.equal(frames[0:1], image)
    step = get_preset("zoom_in", 5, 8, width=64)[1]
    torch.testing.assert_close(frames[4:5], warp(frames[3:4], step), atol=0, rtol=0)
    gap = (frames[4] - frames[3]).abs().mean()
    assert gap == pytest.approx((frames[3] - frames[2]).abs().mean(), rel=0.5)  # no jump at the boundary


@pytest.mark.slow
def test_animate_continue_with_redraws_and_prompt_schedule(pipe) -> None:
    out = make_movie(
        [{0: "a red circle", 4: "a blue square"}, "a green star"],
        [1.0, 0.5],
        transition="continue",
        pipeline=pipe,
        seed=4,
        **ANIMATE,
    )
    assert out.frames.shape[0] == 12 and out.settings["scenes"][0]["prompt"] == {
        "0": "a red circle",
        "4": "a blue square",
    }
    assert out.settings["scenes"][1]["image"] == "last frame of scene 1"


@pytest.mark.slow
def test_t2v_scene_starts_from_the_layout_prior(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from fusionframes.config import LayoutPriorConfig
    from fusionframes.layout_prior.model import LayoutPrior

    t2v = TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    unet = t2v.config.keyframe_unet
    prior_config = LayoutPriorConfig(
        context_dim=unet.context_dim,
        hidden_dim=8,
        channels=(8, 8),
        num_frames=2,
        latent_channels=unet.num_channels,
        latent_height=4,
        latent_width=4,
    )
    t2v.components.layout_prior = LayoutPrior(prior_config).eval()
    plan = validate_movie(t2v.config, ["a red circle"], [1.0], seed=3, steps=4, interpolation_steps=2)
    settings = dataclasses.replace(plan.t2v[0], layout_prior_strength=0.5)
    seen = {}
    real = text_to_video.generate_keyframes

    def spy(*args, **kwargs):
        seen.update(inspect.signature(real).bind(*args, **kwargs).arguments)
        return real(*args, **kwargs)

    monkeypatch.setattr(text_to_video, "generate_keyframes", spy)
    latents = t2v_scene_latents(t2v, settings, torch.Generator().manual_seed(3), progress=False)
    assert torch.isfinite(latents).all()
    assert len(seen["schedule"]) == 2  # strength 0.5 of 4 steps
    context, mask, _, _ = t2v.encode_prompts(settings.prompt, settings.negative_prompt)
    factor = t2v.config.movq.scale_factor
    shape = (unet.num_channels, settings.height // factor, settings.width // factor)
    expected = t2v.keyframe_layout(context, mask, settings.num_keyframes, shape)
    torch.testing.assert_close(seen["start"].init, expected)  # the same start as a single video


@pytest.mark.slow
def test_t2v_continue_first_keyframe_is_the_previous_last_latent(pipe) -> None:
    scenes = ["a red circle", "a blue square"]
    plan = validate_movie(
        pipe.config, scenes, [1.0, 1.0], transition="continue", seed=3, steps=2, interpolation_steps=2
    )
    t2v = pipe.t2v
    first = t2v_scene_latents(t2v, plan.t2v[0], torch.Generator().manual_seed(3), progress=False)
    anchor = first[plan.scene_frames[0] - 1 : plan.scene_frames[0]]
    second = t2v_scene_latents(t2v, plan.t2v[1], torch.Generator().manual_seed(4), anchor, progress=False)
    assert torch.equal(second[:1], anchor)
    decoded = decode_latents(t2v.components.movq, torch.cat([anchor, second[:1]]), progress=False)
    torch.testing.assert_close(decoded[0], decoded[1])
    # The movie drops scene 2's first frame (it repeats scene 1's last) and keeps the counts.
    movie = make_movie(scenes, [1.0, 1.0], transition="continue", pipeline=pipe, seed=3, **T2V)
    last = decode_latents(t2v.components.movq, anchor, progress=False)[0]
    torch.testing.assert_close(movie.frames[3], last, atol=1e-5, rtol=0)
    assert movie.frames.shape[0] == 8


def test_anchored_sampler_pins_the_first_keyframe() -> None:
    param = Parameterisation(TrainedWith())
    schedule = param.schedule(4)
    anchor = torch.randn(1, 2, 3, 3)
    seen: list[torch.Tensor] = []

    def model(x, t):
        seen.append(x[0].clone())
        return torch.zeros_like(x)

    denoise = Anchored(param.denoiser(model, schedule), anchor, None)
    out = denoise.finish(sample_ddpm(denoise, torch.randn(3, 2, 3, 3), schedule))
    assert torch.equal(out[:1], anchor) and len(seen) == 4
    # At the last step the network sees the anchor only lightly noised.
    assert (seen[-1] - anchor[0]).abs().mean() < (seen[0] - anchor[0]).abs().mean()


def test_make_movie_validates_before_loading(tiny_model_dir, monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before validation")

    monkeypatch.setattr(TextToVideoPipeline, "from_pretrained", refuse)
    with pytest.raises(ValueError, match="durations: got 1 durations for 3 scenes"):
        make_movie(["a", "b", "c"], [4], model=tiny_model_dir)
    with pytest.raises(ValueError, match="scenes: need at least one scene"):
        make_movie([], model=tiny_model_dir)
    with pytest.raises(ValueError, match="dtype: unknown 'int4'"):
        make_movie(["a"], model=tiny_model_dir, dtype="int4")


# --------------------------------------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    """The command's handler, so a bad option raises (``cli.main`` would print it and return 2)."""
    args = cli.build_parser(argv).parse_args(argv)
    return args.handler(args)


@pytest.mark.slow
def test_cli_movie_writes_video(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "movie.mp4"
    argv = [
        "movie",
        "a red circle",
        "a blue square",
        "a green star",
        "-o",
        str(out),
        "--model",
        str(tiny_model_dir),
    ]
    argv += ["--durations", "1,0.5,1", "--mode", "animate", "--transition", "continue", "--fps", "6"]
    argv += ["--steps", "2", "--seed", "5", "--device", "cpu", "--motion", "pan_left+zoom_out"]
    assert run_cli(argv) == 0
    frames, fps = read_video(out)
    assert frames.shape == (6 + 3 + 6, 64, 64, 3) and fps == pytest.approx(6)
    meta = read_metadata(out)
    assert meta["seed"] == 5 and meta["scene_frames"] == [6, 3, 6] and meta["transition"] == "continue"
    assert "3 scene(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--durations", "4"], "durations: got 1 durations for 2 scenes"),
        (["--durations", "4,x"], "durations: expected seconds separated by commas"),
        (["--durations", "4,-1"], "durations: scene 2 must last > 0"),
        (["--mode", "slides"], "mode: unknown 'slides'"),
        (["--transition", "wipe"], "transition: unknown 'wipe'"),
        (["--motion", "zoom_in"], "motion: camera moves need --mode animate"),
        (["--mode", "animate", "--fps", "high"], "fps: must be a number of frames per second"),
        (["--mode", "animate", "--motion", "spin"], "motion: unknown preset 'spin'"),
        (["-o", "movie.avi2"], "output: "),
    ],
)
def test_cli_movie_bad_input_before_loading(tiny_model_dir, tmp_path, monkeypatch, extra, message) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before validation")

    monkeypatch.setattr(TextToVideoPipeline, "from_pretrained", refuse)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        run_cli(["movie", "a red circle", "a blue square", "--model", str(tiny_model_dir), *extra])
