"""Animation mode on a tiny random model: the camera path is exact at strength 0, seeds reproduce,
cadence redraws every K-th frame, and every bad input fails in one line before a model is loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusionframes import cli
from fusionframes.camera import CameraMotion, estimate_similarity, estimate_translation, get_preset, warp
from fusionframes.io.checkpoints import read_folder_config
from fusionframes.io.video import read_metadata, read_video
from fusionframes.pipelines.animation import AnimationPipeline, segments, validate_animation
from fusionframes.pipelines.img2img import ImageToImagePipeline, denoise_steps, load_image
from fusionframes.pipelines.text_to_video import GenerationCancelled, TextToVideoPipeline

FAST = {"steps": 2, "progress": False, "output_type": "pt"}


@pytest.fixture(scope="module")
def pipe(tiny_model_dir: Path) -> AnimationPipeline:
    return AnimationPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")


def texture(size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random texture ``[1, 3, S, S]`` in [0, 1] (band-limited, so estimators lock on)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 8, size // 8, generator=g)
    fine = torch.rand(1, 3, size // 2, size // 2, generator=g)
    up = torch.nn.functional.interpolate
    mix = 0.7 * up(coarse, size=(size, size), mode="bicubic") + 0.3 * up(
        fine, size=(size, size), mode="bicubic"
    )
    return mix.clamp(0, 1)


def camera_only(pipe: AnimationPipeline, image: torch.Tensor, motion, fps: float, frames: int, **kw):
    size = image.shape[-1]
    return pipe(
        "a red circle",
        image=image,
        motion=motion,
        seconds=frames / fps,
        fps=fps,
        width=size,
        height=size,
        strength=0.0,
        cadence=1,
        **FAST,
        **kw,
    ).frames


# --------------------------------------------------------------------------------------------- camera path


def test_strength_zero_is_the_pure_camera_warp(pipe: AnimationPipeline) -> None:
    image = texture(64)
    frames = camera_only(pipe, image, "zoom_in+rotate_cw", fps=8, frames=8, seed=1)
    motions = get_preset("zoom_in+rotate_cw", 8, 8, width=64)
    expected = [image]
    for t in range(1, 8):
        expected.append(warp(expected[-1], motions[t], border="reflect"))
    assert frames.shape == (8, 3, 64, 64)
    assert torch.equal(frames, torch.cat(expected))


def test_pan_speed_recovered_by_phase_correlation(pipe: AnimationPipeline) -> None:
    image = texture(128, seed=2)
    for motion, (tx, ty) in [
        ("pan_right", (-64 / 24 * 128 / 512, 0.0)),
        ({"translation_y": "0:(2.5)"}, (0, 2.5)),
    ]:
        frames = camera_only(pipe, image, motion, fps=24, frames=8)
        for a, b in zip(frames[:-1], frames[1:], strict=True):
            dx, dy = estimate_translation(a, b)
            assert abs(dx - tx) < 0.5 and abs(dy - ty) < 0.5, (motion, dx, dy)
            assert abs(dx - tx) < 0.05 and abs(dy - ty) < 0.05, (motion, dx, dy)  # in practice much better


@pytest.mark.slow
@pytest.mark.parametrize(
    "motion", ["zoom_in", "rotate_ccw", "zoom_out+rotate_cw", {"zoom": "0:(1.04)", "angle": "0:(2)"}]
)
def test_zoom_and_rotation_recovered_within_two_percent(pipe: AnimationPipeline, motion) -> None:
    frames = camera_only(pipe, texture(256, seed=3), motion, fps=8, frames=5)
    truth = (
        get_preset(motion, 5, 8, width=256)[1]
        if isinstance(motion, str)
        else CameraMotion(zoom=1.04, angle=2.0)
    )
    for a, b in zip(frames[:-1], frames[1:], strict=True):
        found = estimate_similarity(a, b)
        if truth.zoom != 1.0:
            assert abs((found.zoom - 1) - (truth.zoom - 1)) <= 0.02 * abs(truth.zoom - 1), found
        if truth.angle != 0.0:
            assert abs(found.angle - truth.angle) <= 0.02 * abs(truth.angle), found


def test_depth_map_adds_parallax(pipe: AnimationPipeline, tmp_path: Path) -> None:
    depth = np.zeros((64, 64), np.uint8)
    depth[:, :32] = 255  # left half near
    Image.fromarray(depth).save(tmp_path / "depth.png")
    flat = camera_only(pipe, texture(64), {"translation_x": "0:(2)"}, fps=8, frames=3)
    deep = camera_only(
        pipe, texture(64), {"translation_x": "0:(2)"}, fps=8, frames=3, depth=tmp_path / "depth.png"
    )
    dx_near, _ = estimate_translation(deep[0, :, 16:48, 4:28], deep[1, :, 16:48, 4:28])
    dx_flat, _ = estimate_translation(flat[0, :, 16:48, 4:28], flat[1, :, 16:48, 4:28])
    assert dx_flat == pytest.approx(2.0, abs=0.1)
    assert dx_near > 2.5  # nearer content (depth 0.5) moves about twice as far


# --------------------------------------------------------------------------------------------- diffusion


@pytest.mark.slow
def test_seed_reproducible_and_generator_matches(pipe: AnimationPipeline) -> None:
    kw = {"seconds": 0.5, "fps": 8, "cadence": 2, **FAST}
    a = pipe("a red circle", seed=7, **kw)
    b = pipe("a red circle", seed=7, **kw)
    c = pipe("a red circle", seed=8, **kw)
    g = pipe("a red circle", generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.frames, g.frames)
    assert (a.frames - c.frames).abs().max() > 1e-3
    assert a.settings["seed"] == 7 and a.settings["num_frames"] == 4


@pytest.mark.slow
def test_random_seed_is_recorded(pipe: AnimationPipeline) -> None:
    out = pipe("a blue square", seconds=0.25, fps=8, **FAST)
    again = pipe("a blue square", seconds=0.25, fps=8, seed=out.settings["seed"], **FAST)
    assert torch.equal(out.frames, again.frames)


@pytest.mark.slow
@pytest.mark.parametrize(
    "cadence, frames, drawn", [(1, 5, [1, 2, 3, 4]), (3, 10, [3, 6, 9]), (4, 10, [4, 8])]
)
def test_cadence_frame_count_and_redrawn_frames(pipe, monkeypatch, cadence, frames, drawn) -> None:
    calls: list[float] = []
    original = ImageToImagePipeline.image_to_image

    def spy(self, image, prompt, strength, *args, **kwargs):
        calls.append(strength)
        return original(self, image, prompt, strength, *args, **kwargs)

    monkeypatch.setattr(ImageToImagePipeline, "image_to_image", spy)
    out = pipe("a red circle", seconds=frames / 10, fps=10, cadence=cadence, seed=0, **FAST)
    assert out.frames.shape[0] == frames
    assert out.keyframe_indices == [0, *drawn]  # frame 0 from text, then every K-th frame
    assert len(calls) == len(drawn)
    assert segments(10, 4) == [(0, 4, True), (4, 8, True), (8, 9, False)]


@pytest.mark.slow
def test_strength_schedule_and_prompt_schedule(pipe, monkeypatch) -> None:
    used: list[str] = []
    original = ImageToImagePipeline.encode_prompt

    def spy(self, prompt, negative_prompt=None):
        used.append(prompt)
        return original(self, prompt, negative_prompt)

    monkeypatch.setattr(ImageToImagePipeline, "encode_prompt", spy)
    out = pipe(
        {0: "a red circle", 4: "a blue square"},
        image=texture(64),
        seconds=1,
        fps=8,
        cadence=1,
        strength="0:(0), 3:(0), 4:(0.5)",
        seed=0,
        **FAST,
    )
    assert out.keyframe_indices == [4, 5, 6, 7]  # frames 1..3 have strength 0: pure warps
    assert set(used) == {"a red circle", "a blue square"}
    assert out.settings["prompt"] == {"0": "a red circle", "4": "a blue square"}


@pytest.mark.slow
def test_callback_reports_frames_and_can_cancel(pipe: AnimationPipeline) -> None:
    seen: list[tuple[str, int, int]] = []

    def stop_at_frame_four(stage: str, step: int, total: int) -> None:
        seen.append((stage, step, total))
        if stage == "frames" and step >= 4:
            raise GenerationCancelled("stop")

    with pytest.raises(GenerationCancelled):
        pipe("a red circle", seconds=1, fps=8, cadence=2, seed=0, callback=stop_at_frame_four, **FAST)
    assert ("first frame", 2, 2) in seen and ("frames", 1, 8) in seen and seen[-1] == ("frames", 5, 8)


def test_denoise_steps_follow_strength() -> None:
    assert denoise_steps(0.0, 12) == 0
    assert denoise_steps(0.45, 12) == 5
    assert denoise_steps(0.01, 12) == 1  # any non-zero strength redraws
    assert denoise_steps(1.0, 12) == 12


def test_img2img_strength_zero_returns_input_and_t2i_runs(pipe: AnimationPipeline) -> None:
    images = pipe.images
    embedding = images.encode_prompt("a red circle")
    image = texture(64)
    assert images.image_to_image(image, embedding, 0.0, 4, 5.0) is image
    redrawn = images.image_to_image(image, embedding, 0.5, 4, 5.0, torch.Generator().manual_seed(0))
    assert redrawn.shape == image.shape and not torch.equal(redrawn, image)
    picture = images(
        "a red circle", image=image, strength=0.5, num_inference_steps=2, seed=0, output_type="np"
    )
    assert picture.shape == (64, 64, 3) and picture.dtype == np.uint8


# --------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "I;16", "CMYK"])
def test_image_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    rgb = Image.fromarray((texture(32).numpy()[0].transpose(1, 2, 0) * 255).astype(np.uint8))
    if mode == "I;16":  # a real 16-bit grey picture: full 0..65535 range
        picture = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    else:
        picture = rgb.convert(mode)
    path = tmp_path / f"in.{'tif' if mode == 'CMYK' else 'png'}"
    picture.save(path)
    tensor = load_image(path)
    assert tensor.shape == (1, 3, 32, 32) and 0 <= tensor.min() and tensor.max() <= 1
    assert tensor.mean() > 0.05  # 16-bit grey is scaled, not clipped to white or black


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert torch.allclose(load_image(tmp_path / "clear.png"), torch.ones(1, 3, 8, 8))


def test_image_is_cropped_and_resized_to_the_frame(pipe: AnimationPipeline) -> None:
    wide = torch.rand(1, 3, 40, 80)
    out = pipe("a red circle", image=wide, seconds=0.25, fps=8, strength=0.0, width=64, height=64, **FAST)
    assert out.frames.shape == (2, 3, 64, 64)


# --------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("files")
    (root / "notes.png").write_text("not a picture")
    return {"bad": root / "notes.png", "missing": root / "missing.png"}


BAD = [
    ({"prompt": ""}, "prompt: must be a non-empty string"),
    ({"prompt": {}}, "prompt: must be a non-empty string or a non-empty"),
    ({"prompt": {99: "x"}}, r"prompt: schedule key 99 is not a frame in 0\.\.95"),
    ({"motion": "spin"}, "motion: unknown preset 'spin'; valid presets: dolly, dolly_out, orbit, pan_down"),
    ({"motion": "zoom_in+wobble"}, "motion: unknown preset 'wobble'"),
    ({"motion": {"twist": "0:(1)"}}, "motion: unknown schedule 'twist'; allowed: zoom, angle"),
    ({"motion": {"zoom": "0 (1)"}}, "zoom: expected ':' at position 3"),
    ({"motion": [CameraMotion()] * 3}, "motion: expected 96 CameraMotion"),
    ({"motion": 5}, "motion: expected a preset name"),
    ({"strength": 1.5}, "strength: must be between 0 and 1, got 1.5"),
    ({"strength": -0.1}, "strength: must be between 0 and 1, got -0.1"),
    ({"strength": float("nan")}, "strength: must be a finite number"),
    (
        {"strength": "0:(0.5), 5:(1.5)"},
        "strength: must be between 0 and 1 at every frame, got 1.1 at frame 3",
    ),
    ({"strength": "0:(0.5"}, "strength: "),
    ({"seconds": 0}, "seconds: must be > 0 and <= 600, got 0"),
    ({"seconds": -2}, "seconds: must be > 0 and <= 600, got -2"),
    ({"seconds": 1e5}, "seconds: must be > 0 and <= 600"),
    ({"seconds": 0.01}, "seconds: 0.01 s at 24 fps is less than one frame"),
    ({"fps": 0}, "fps: must be > 0 and <= 60, got 0"),
    ({"fps": 500}, "fps: must be > 0 and <= 60, got 500"),
    ({"fps": float("inf")}, "fps: must be a finite number"),
    ({"cadence": 0}, "cadence: must be an integer >= 1, got 0"),
    ({"cadence": 1.5}, "cadence: must be an integer >= 1, got 1.5"),
    ({"border": "mirror"}, "border: unknown 'mirror'; allowed: reflect, replicate, wrap, zeros"),
    ({"colour_coherence": "xyz"}, "colour_coherence: unknown 'xyz'; allowed: lab, hsv, rgb, None"),
    ({"noise": -0.1}, "noise: must be >= 0.0"),
    ({"noise": 3}, "noise: must be between 0 and 1"),
    ({"width": 70}, "width: 70 is not allowed; use a multiple of 8"),
    ({"height": 4096}, "height: 4096 is not allowed"),
    ({"steps": 0}, "steps: must be an integer >= 1, got 0"),
    ({"guidance_scale": -1}, "guidance_scale: must be >= 0.0"),
    ({"seed": -1}, "seed: must be an integer between 0 and 2\\*\\*63 - 1, got -1"),
    ({"image": "missing"}, "image: file not found: .*missing.png"),
    ({"image": "bad"}, "image: cannot read '.*notes.png' as an image"),
    ({"image": np.zeros((4, 4, 2))}, r"image: expected an array \[H, W\], \[H, W, 3\]"),
    ({"image": torch.full((3, 8, 8), 2.0)}, r"image: tensor values must be finite and in \[0, 1\]"),
    ({"image": 3.5}, "image: expected a file path, PIL image, numpy array or tensor"),
    ({"depth": "missing"}, "depth: file not found: .*missing.png"),
    ({"depth": "bad"}, "depth: cannot read '.*notes.png' as an image"),
    ({"fov_deg": 200}, "fov_deg: must be between 0 and 180 degrees"),
]


@pytest.mark.parametrize(
    "kwargs, message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)]
)
def test_bad_inputs_fail_in_one_line(tiny_model_dir: Path, files, kwargs: dict, message: str) -> None:
    config = read_folder_config(tiny_model_dir)
    args = {"prompt": "a red circle", **kwargs}
    for key in ("image", "depth"):
        if isinstance(args.get(key), str):
            args[key] = files[args[key]]
    with pytest.raises(ValueError, match=message) as error:
        validate_animation(config, **args)
    assert "\n" not in str(error.value)


def test_pipeline_validates_before_any_model_work(pipe: AnimationPipeline, monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("the model ran before validation")

    monkeypatch.setattr(AnimationPipeline, "render", refuse)
    with pytest.raises(ValueError, match="strength: must be between 0 and 1"):
        pipe("a red circle", strength=2)
    with pytest.raises(ValueError, match="output_type: unknown 'gif'"):
        pipe("a red circle", output_type="gif")


# --------------------------------------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    """The command's handler, so a bad option raises (``cli.main`` would print it and return 2)."""
    args = cli.build_parser(argv).parse_args(argv)
    return args.handler(args)


@pytest.mark.slow
def test_cli_animate_writes_video_with_metadata(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    Image.fromarray((texture(48).numpy()[0].transpose(1, 2, 0) * 255).astype(np.uint8)).convert("P").save(
        tmp_path / "in.png"
    )
    out = tmp_path / "anim.mp4"
    argv = ["animate", "a red circle", "-o", str(out), "--model", str(tiny_model_dir), "--device", "cpu"]
    argv += [
        "--image",
        str(tmp_path / "in.png"),
        "--motion",
        "custom",
        "--zoom",
        "0:(1.02)",
        "--angle",
        "0:(1)",
    ]
    argv += ["--seconds", "1", "--fps", "6", "--steps", "2", "--cadence", "2", "--seed", "3"]
    argv += ["--strength", "0:(0.3), 4:(0.6)", "--colour-coherence", "none", "--border", "wrap"]
    assert run_cli(argv) == 0
    frames, fps = read_video(out)
    assert frames.shape == (6, 64, 64, 3) and fps == pytest.approx(6)
    meta = read_metadata(out)
    assert meta["seed"] == 3 and meta["motion"] == {
        "custom": {"zoom": "0:(1.02)", "angle": "0:(1)", "interpolation": "linear"}
    }
    assert meta["colour_coherence"] is None and meta["strength"] == "0:(0.3), 4:(0.6)"
    assert "seed 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--motion", "spin"], "motion: unknown preset 'spin'"),
        (["--motion", "custom"], "motion: 'custom' needs at least one schedule"),
        (["--zoom", "0:(1.1)", "--motion", "pan_left"], "zoom: schedules need --motion custom"),
        (["--rotation-y", "0:(x)"], "rotation_3d_y: unknown name 'x'"),
        (["--strength", "2"], "strength: must be between 0 and 1, got 2"),
        (["--fps", "fast"], "fps: must be a number of frames per second, got 'fast'"),
        (["--cadence", "0"], "cadence: must be an integer >= 1"),
        (["--image", "nowhere.png"], "image: file not found"),
        (["--colour-coherence", "cmyk"], "colour_coherence: unknown 'cmyk'"),
        (["-o", "clip.avi2"], "output: "),
        (["--device", "quantum"], "device: unknown 'quantum'"),
    ],
)
def test_cli_bad_input_before_loading(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch, extra, message
) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before validation")

    monkeypatch.setattr(TextToVideoPipeline, "from_pretrained", refuse)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        run_cli(["animate", "a red circle", "--model", str(tiny_model_dir), *extra])
