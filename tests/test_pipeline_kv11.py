"""End to end: the Kandinsky Video 1.1 pipeline on random weights at a tiny 1.1 architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CAPTIONS, make_tiny_kv11_components, tiny_config_11
from PIL import Image

from fusionframes.pipelines.first_frame import (
    check_image,
    decode_image,
    encode_image,
    fit_for_encoding,
    image_to_tensor,
)
from fusionframes.pipelines.kandinsky11 import (
    MOTION_SCORES,
    KandinskyVideo11Pipeline,
    validate_settings_11,
)
from fusionframes.text.tokenizer import make_text_encoder_folder

PROMPT = CAPTIONS[0]
FAST = {"num_inference_steps": 1, "interpolation_steps": 1, "num_keyframes": 3, "progress": False}
_RUNS: dict[tuple, np.ndarray] = {}


def make_components(root: Path, seed: int = 0):
    return make_tiny_kv11_components(root, seed)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> KandinskyVideo11Pipeline:
    components, _ = make_components(tmp_path_factory.mktemp("tiny11"))
    return KandinskyVideo11Pipeline(components, device="cpu", dtype="float32")


def frames_of(pipe, fresh: bool = False, **kwargs) -> np.ndarray:
    """The frames of one run (a run with the same arguments is made once per module unless ``fresh``)."""
    key = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
    if fresh or key not in _RUNS:
        kwargs.setdefault("seed", 0)
        _RUNS[key] = pipe(PROMPT, output_type="np", **{**FAST, **kwargs}).frames
    return _RUNS[key]


@pytest.mark.parametrize(
    ("fps", "count"), [("low", 3), ("medium", 9), pytest.param("high", 33, marks=pytest.mark.slow)]
)
def test_text_to_video_every_fps(pipe, fps: str, count: int) -> None:
    stages: list[str] = []
    video = pipe(PROMPT, seed=1, fps=fps, callback=lambda s, i, n: stages.append(s), **FAST)
    assert len(video.frames) == count and video.frames[0].size == (64, 64)
    assert video.keyframe_indices == list(range(0, count, 4 ** ("low", "medium", "high").index(fps)))
    assert stages[0] == "first frame" and "keyframes" in stages and stages[-1] == "decoding"
    assert ("interpolation 2" in stages) == (fps == "high")
    assert video.settings.to_dict()["motion_score"] == MOTION_SCORES["medium"]


def test_seeds_reproduce_and_differ(pipe) -> None:
    a, b, c = frames_of(pipe), frames_of(pipe, fresh=True), frames_of(pipe, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("motion", ["extreme", 7.5])
def test_every_motion_level_reaches_the_network(pipe, motion) -> None:
    seen: list[torch.Tensor] = []
    hook = pipe.components.keyframe_unet.register_forward_pre_hook(
        lambda module, args, kwargs: (
            seen.append(kwargs["motion_score"]) if "motion_score" in kwargs else None
        ),
        with_kwargs=True,
    )
    try:
        frames = frames_of(pipe, motion=motion)
    finally:
        hook.remove()
    score = MOTION_SCORES[motion] if isinstance(motion, str) else motion
    assert seen and all(torch.all(s == score) for s in seen)
    assert not np.array_equal(frames, frames_of(pipe))  # the default, medium


@pytest.mark.slow
def test_both_decoders(pipe) -> None:
    video, image = frames_of(pipe), frames_of(pipe, decoder="image")
    assert video.shape == image.shape == (3, 64, 64, 3)
    assert not np.array_equal(video, image)
    latents = torch.randn(9, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    pieces = validate_settings_11(pipe.config, PROMPT, seed=0)[0]
    windows = validate_settings_11(pipe.config, PROMPT, options={"decode_window": 4, "decode_overlap": 2})[0]
    by_pieces, by_windows = pipe.decode_11(latents, pieces, False), pipe.decode_11(latents, windows, False)
    assert by_pieces.shape == by_windows.shape == (9, 3, 64, 64)
    assert not torch.equal(by_pieces, by_windows)  # the reference's 4-frame clips have seams, windows not


def test_image_decoder_frames_are_independent(pipe) -> None:
    """Decoding frame by frame: the image MoVQ's first-row norm never mixes frames."""
    latents = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    settings, _ = validate_settings_11(pipe.config, PROMPT, options={"decoder": "image"}, seed=0)
    together = pipe.decode_11(latents, settings, progress=False)
    alone = pipe.decode_11(latents[2:], settings, progress=False)
    torch.testing.assert_close(together[2:], alone)


def test_image_to_video_keeps_the_image(pipe) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8))
    stages: list[str] = []
    video = pipe(
        PROMPT,
        image=image,
        seed=0,
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
    released = pipe(PROMPT, image=image, seed=0, decoder="image", output_type="np", **FAST).frames
    assert not np.array_equal(released[0], video.frames[0])
    assert np.array_equal(released[1:], video.frames[1:])  # keep_first_frame only swaps frame 0's latent
    assert not np.array_equal(released, frames_of(pipe, decoder="image"))  # the image conditions


def test_image_from_path_and_modes(tmp_path: Path) -> None:
    path = tmp_path / "first.png"
    Image.new("L", (64, 64), 128).save(path)
    loaded = check_image(str(path))
    assert loaded.mode == "L" and loaded.size == (64, 64)
    # a grey L image becomes the same pixels as the grey RGB image (converted as the reference does)
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    assert torch.equal(image_to_tensor(fit_for_encoding(loaded, 64, 64)), image_to_tensor(grey))


def test_negative_prompt_reaches_the_unconditional_rows(pipe) -> None:
    contexts: list[torch.Tensor] = []
    hook = pipe.components.keyframe_unet.register_forward_pre_hook(
        lambda module, args: contexts.append(args[2].clone())
    )
    try:
        with_negative = frames_of(pipe, negative_prompt=CAPTIONS[1], fresh=True)
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
        ({"width": 70}, "width: 70"),
        ({"height": 100}, "height: 100"),
        ({"fps": "ultra"}, "fps: unknown"),
        ({"decoder": "gif"}, "decoder"),
        ({"noise_augmentation": 1000}, "noise_augmentation"),
        ({"num_keyframes": 1}, "num_keyframes"),
        ({"keep_first_frame": "yes"}, "keep_first_frame"),
        ({"output_type": "gif"}, "output_type"),
        ({"seed": -1}, "seed"),
        ({"decode_window": 4, "decode_overlap": 4}, "decode_overlap"),
        ({"decode_overlap": 1}, "decode_overlap"),
        ({"decode_window": 0}, "decode_window"),
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


PARITY_KV11 = Path(
    __import__("os").environ.get(
        "FUSIONFRAMES_PARITY_KV11_DIR", Path(__file__).resolve().parents[2] / "shared" / "parity_kv11"
    )
)
RELEASE_PARTS = {  # released file name -> (parity case holding it, configs.json section)
    "t2v.pt": ("t2v_unet_video", "t2v"),
    "interpolation.pt": ("interpolation_unet", "interpolation"),
    "movq.pt": ("image_movq", "image_movq"),
    "video_movq.pt": ("video_movq", "video_movq"),
    "t5_projections.pt": ("text_projection", "text_encoder"),
}


def make_release_folder(root: Path) -> Path:
    """A folder in the hub's layout made of the parity cases' small random reference checkpoints, with
    a small T5 of the projections' width in ``text_encoder/``."""
    import json
    import shutil

    if not all((PARITY_KV11 / case).is_dir() for case, _ in RELEASE_PARTS.values()):
        pytest.skip(f"no Kandinsky Video 1.1 parity cases at {PARITY_KV11} to build a release folder from")
    configs = {}
    root.mkdir(parents=True, exist_ok=True)
    for name, (case, part) in RELEASE_PARTS.items():
        shutil.copy(PARITY_KV11 / case / "checkpoint.pt", root / name)
        configs[part] = json.loads((PARITY_KV11 / case / "config.json").read_text())[part]
    configs["text_encoder"] = {**configs["text_encoder"], "tokens_length": 16}
    (root / "configs.json").write_text(json.dumps(configs))
    encoder_dim = json.loads((PARITY_KV11 / "text_projection" / "config.json").read_text())["case"][
        "encoder_dim"
    ]
    make_text_encoder_folder(
        CAPTIONS * 4,
        root / "text_encoder",
        vocab_size=60,
        d_model=encoder_dim,
        num_layers=1,
        num_heads=2,
        d_ff=32,
    )
    return root


@pytest.fixture(scope="module")
def release_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release_folder(tmp_path_factory.mktemp("release11") / "kv11")


@pytest.mark.slow
def test_migration_snippet(release_folder: Path, tmp_path: Path) -> None:
    """The 1.1 README's snippets with only the import changed (plus a tiny size and step count)."""
    from fusionframes.kandinsky_video import get_T2V_pipeline

    device_map = "cpu"  # the README has 'cuda:0'
    t2v_pipe = get_T2V_pipeline(device_map, model=release_folder, dtype="float32")
    quick = {"num_inference_steps": 1, "interpolation_steps": 1, "num_keyframes": 3}
    video = t2v_pipe(
        "A cat wearing sunglasses and working as a lifeguard at a pool.",
        width=64,
        height=64,
        fps="medium",
        motion="high",
        key_frame_guidance_scale=5.0,
        guidance_weight_prompt=5.0,
        guidance_weight_image=3.0,
        **quick,
    )
    assert len(video) == 9 and all(isinstance(f, Image.Image) and f.size == (64, 64) for f in video)
    path = tmp_path / "video.gif"
    video[0].save(path, save_all=True, append_images=video[1:], duration=int(5500 / len(video)), loop=0)
    assert path.stat().st_size > 0
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    video2 = t2v_pipe(
        "A panda climbs up a tree.", image=img, width=64, height=64, fps="low", motion="medium", **quick
    )
    assert len(video2) == 3


def test_device_map_per_component(release_folder: Path) -> None:
    from fusionframes.kandinsky_video import get_T2V_pipeline, resolve_device_map

    device_map = dict.fromkeys(("unet", "interpolation_unet", "text_encoder", "movq"), "cpu")
    t2v_pipe = get_T2V_pipeline(device_map, model=release_folder, dtype="float32")
    pipeline = t2v_pipe.pipeline
    assert pipeline.text_device == torch.device("cpu") and pipeline.video_movq is not None
    assert pipeline.device_for(pipeline.components.interpolation_unet) == torch.device("cpu")

    assert set(resolve_device_map("cpu").values()) == {torch.device("cpu")}
    with pytest.raises(ValueError, match="device_map: needs exactly the keys"):
        resolve_device_map({"unet": "cpu"})
    with pytest.raises(ValueError, match="device_map"):
        resolve_device_map(3)
