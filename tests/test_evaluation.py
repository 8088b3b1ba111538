"""The synthetic-world evaluator: its own ground truth, smoothness, scoring, evaluate and contact sheets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fusionframes import synthetic as S
from fusionframes.evaluation import (
    METRICS,
    analyse_clip,
    contact_sheet,
    default_prompts,
    evaluate,
    ground_truth_check,
    score_clip,
    smoothness_px,
)


def _clip(obj: S.ObjectSpec, background: str = "gray", frames: int = 8, size: int = 96) -> np.ndarray:
    return S.render_clip(S.Scene([obj], background), size, frames)


@pytest.mark.slow
def test_ground_truth_scores_at_least_98_percent_raw_and_after_mp4():
    report = ground_truth_check(n=64, seed=0, size=128, frames=8)
    assert report["clips"] == 64
    for variant in ("raw", "mp4"):
        accuracy = report[variant]["accuracy"]
        assert all(accuracy[m] >= 98.0 for m in METRICS), (variant, accuracy, report["failures"])
        assert report[variant]["smoothness_px_linear"] < 0.5


@pytest.mark.parametrize("shape", S.SHAPES)
@pytest.mark.parametrize("angle", [0.0, 17.0, 41.0])
def test_shapes_are_told_apart_at_any_orientation(shape, angle):
    obj = S.ObjectSpec("blue", shape, "rotating", "quickly", size=0.2, start=(0.5, 0.5))
    frame = S.render_frame(S.Scene([obj], "beige"), 96, angle / S.ROTATION_DEG["quickly"])
    track = analyse_clip(np.stack([frame, frame])).objects[0]
    assert (track.colour, track.shape) == ("blue", shape)


def test_smoothness_near_zero_for_linear_motion_and_large_for_jitter():
    frames = _clip(S.ObjectSpec("red", "square", "moving right", "quickly", 0.2, (0.25, 0.5)), frames=13)
    keys = [0, 4, 8, 12]
    assert smoothness_px(frames, keys) < 0.3
    jittered = frames.copy()
    rng = np.random.default_rng(0)
    for i in set(range(13)) - set(keys):
        jittered[i] = np.roll(frames[i], tuple(rng.choice([-6, 6], 2)), axis=(0, 1))
    assert smoothness_px(jittered, keys) > 4.0
    with pytest.raises(ValueError, match="^keyframe_indices: "):
        smoothness_px(frames, [3])


def test_score_clip_checks_each_attribute_and_skips_what_the_prompt_omits():
    frames = _clip(S.ObjectSpec("red", "triangle", "moving up", "slowly", 0.22, (0.5, 0.7)))
    analysis = analyse_clip(frames)
    assert score_clip(
        S.parse_prompt("a red triangle moving up on a gray background"), analysis
    ) == dict.fromkeys(METRICS, True)
    wrong = score_clip(S.parse_prompt("a blue star moving down on a teal background"), analysis)
    assert wrong == {"colour": False, "shape": False, "motion": False, "background": False, "count": True}
    assert score_clip(S.parse_prompt("a red triangle moving up"), analysis)["background"] is None
    still = analyse_clip(_clip(S.ObjectSpec("red", "circle", "still", size=0.22)))
    assert score_clip(S.parse_prompt("a red circle rotating"), still)["motion"] is None


def test_camera_pan_is_expected_in_the_motion():
    obj = S.ObjectSpec("yellow", "star", "still", "slowly", 0.22, (0.35, 0.5))
    frames = S.render_clip(S.Scene([obj], "navy", camera_pan="left"), 96, 8)
    analysis = analyse_clip(frames)
    assert analysis.objects[0].direction == "moving right"
    assert score_clip(
        S.parse_prompt("a yellow star resting on a navy background, camera panning left"), analysis
    )["motion"]
    assert not score_clip(S.parse_prompt("a yellow star resting on a navy background"), analysis)["motion"]


def _oracle(prompt: str, seed: int) -> tuple[np.ndarray, list[int]]:
    scene = S.scene_from_spec(S.parse_prompt(prompt), np.random.default_rng(seed))
    return S.render_clip(scene, 96, 9), [0, 4, 8]


def test_evaluate_scores_an_oracle_reports_unparsed_and_splits_held_out(tmp_path):
    prompts = [
        *default_prompts(4, seed=1),
        "a cat playing the piano",
        *default_prompts(2, seed=1, holdout=True),
    ]
    report = evaluate(_oracle, prompts, num=None, seed=5, sheet_path=tmp_path / "sheet.png")
    json.dumps(report, allow_nan=False)
    assert report["unparsed"] == ["a cat playing the piano"]
    assert report["training"]["prompts"] == 4 and report["held_out"]["prompts"] == 2
    for split in ("overall", "training", "held_out"):
        assert all(report[split]["accuracy"][m] == 100.0 for m in METRICS), report[split]
        assert report[split]["smoothness_px"] is not None
    rows = report["rows"]
    assert [r["split"] for r in rows] == ["training"] * 4 + ["unparsed"] + ["held_out"] * 2
    assert rows[0]["seed"] == 5 and "scores" not in rows[4]
    assert Image.open(report["contact_sheet"]).size[0] > 3 * 96


def test_evaluate_catches_a_wrong_generator():
    def always_blue_square(prompt: str, seed: int) -> tuple[np.ndarray, list[int]]:
        obj = S.ObjectSpec("blue", "square", "still", size=0.22)
        return S.render_clip(S.Scene([obj], "white"), 64, 4), [0, 3]

    prompts = ["a red circle moving right on a gray background", "a yellow star falling, black background"]
    report = evaluate(always_blue_square, prompts, num=1, seed=0)
    assert report["overall"]["prompts"] == 1
    assert report["overall"]["accuracy"]["colour"] == 0.0 and report["overall"]["accuracy"]["count"] == 100.0
    with pytest.raises(ValueError, match="^generate"):
        evaluate(lambda p, s: np.zeros((4, 64, 64, 3), np.uint8), prompts)


def test_default_prompts_are_deterministic_parse_and_keep_held_out_apart():
    train, held = default_prompts(40, seed=3), default_prompts(10, seed=3, holdout=True)
    assert train == default_prompts(40, seed=3) and train != default_prompts(40, seed=4)
    for prompt in train:
        spec = S.parse_prompt(prompt)
        assert spec and not {(o["colour"], o["shape"], o["motion"]) for o in spec["objects"]} & set(
            S.HELD_OUT
        )
    triples = [tuple(S.parse_prompt(p)["objects"][0][k] for k in ("colour", "shape", "motion")) for p in held]
    assert set(triples) == set(S.HELD_OUT)
    with pytest.raises(ValueError, match="^n: "):
        default_prompts(-1)


def test_contact_sheet_writes_a_png_grid(tmp_path):
    rows = [np.full((3, 32, 32, 3), 40 * i, np.uint8) for i in range(1, 3)]
    path = contact_sheet(
        rows, ["first clip", "second clip with a much longer caption " * 3], tmp_path / "s.png"
    )
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] >= 3 * 32 and image.size[1] > 2 * 32
    with pytest.raises(ValueError, match="^labels: "):
        contact_sheet(rows, ["only one"], tmp_path / "bad.png")


def test_analyse_clip_rejects_bad_frames():
    with pytest.raises(ValueError, match="^frames: "):
        analyse_clip(np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="^frames: "):
        analyse_clip(np.zeros((1, 32, 32, 3), np.uint8))


def test_direction_probe_clips_reverse_to_the_opposite_motion() -> None:
    from fusionframes.evaluation.direction_probe import directional_clips
    from fusionframes.synthetic import parse_prompt

    opposite = {"right": "left", "left": "right", "up": "down", "down": "up"}

    def backwards(motion: str) -> str:
        if motion.startswith("moving "):
            return "moving " + "-".join(opposite[w] for w in motion.removeprefix("moving ").split("-"))
        return {"growing": "shrinking", "shrinking": "growing"}.get(motion, motion)

    for video, text, flipped in directional_clips(8, frames=4, size=32, seed=1):
        assert video.shape == (4, 32, 32, 3) and video.dtype == np.uint8
        spec, reversed_spec = parse_prompt(text), parse_prompt(flipped)
        assert flipped != text
        for obj, rev in zip(spec["objects"], reversed_spec["objects"], strict=True):
            assert rev["motion"] == backwards(obj["motion"])
            assert (rev["colour"], rev["shape"]) == (obj["colour"], obj["shape"])


@pytest.mark.slow
def test_direction_probe_reports_which_caption_denoises_better(tiny_model_dir) -> None:
    """A stand-in U-Net that denoises well only under the true caption must score 100% / a positive gap."""
    import torch

    from fusionframes.evaluation.direction_probe import direction_probe
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(str(tiny_model_dir), dtype="float32")
    unet = pipe.components.keyframe_unet
    real_encode = pipe.encode_prompts
    seen: dict[str, float] = {}

    def encode(prompt, negative):
        context, mask, *rest = real_encode(prompt, negative)
        marker = float(len(seen) % 2)  # the probe encodes (true, reversed) in turn
        seen[prompt] = marker
        return (torch.full_like(context, marker), mask, *rest)

    class Reader(torch.nn.Module):
        config = unet.config

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, time, context, *args, **kwargs):
            return x if float(context.flatten()[0]) == 0.0 else torch.zeros_like(x)

    pipe.encode_prompts = encode
    pipe.components.keyframe_unet = Reader()
    report = direction_probe(pipe, clips=3, timesteps=(950,))
    row = report["timesteps"]["950"]
    assert row["prefers_true"] == 100.0 and row["gap_percent"] > 0


def test_ground_truth_check_scores_extra_variants() -> None:
    """A transform that wipes the objects scores 0 on colour while raw and MP4 clips stay at 100%."""
    report = ground_truth_check(n=4, seed=0, size=128, frames=8, extra_variants={"wiped": _wipe})
    assert report["raw"]["accuracy"]["colour"] == 100.0 and report["mp4"]["accuracy"]["colour"] == 100.0
    assert report["wiped"]["accuracy"]["colour"] == 0.0
    assert any(f["variant"] == "wiped" for f in report["failures"])


def _wipe(clip: np.ndarray) -> np.ndarray:
    """Every pixel of every frame set to the first frame's top-left (background) colour."""
    return np.broadcast_to(clip[:1, :1, :1], clip.shape).copy()
