"""The ``moved`` image-to-video start: a first frame's objects lifted off it and moved along tracks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from fusionframes.evaluation.analysis import analyse_clip, object_mattes
from fusionframes.pipelines.builtin11 import check_image_start, image_objects
from fusionframes.pipelines.moved_objects import lift_objects, move_objects, moved_start, resample_tracks
from fusionframes.synthetic import render_clip, sample_scene


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def first_frame(seed: int) -> tuple[object, np.ndarray]:
    scene = sample_scene(np.random.default_rng([2026, 12, 4, seed]))
    return scene, render_clip(scene, 128, 29)[0]


def tracks_for(lifted, frames: int, shift_x: float, log_scale: float, turn: float) -> torch.Tensor:
    """Tracks [F, S, 5] taking every lifted object right by ``shift_x`` (of half the frame), scaling it
    by exp(log_scale) and turning it by ``turn`` radians over ``frames`` keyframes."""
    tracks = torch.zeros(frames, len(lifted.objects), 5)
    ramp = torch.linspace(0, 1, frames)
    for slot, obj in enumerate(lifted.objects):
        tracks[:, slot, 0] = 1.0
        tracks[:, slot, 1] = obj.seen.x * 2 - 1 + shift_x * ramp
        tracks[:, slot, 2] = obj.seen.y * 2 - 1
        tracks[:, slot, 3] = math.log(obj.seen.radius * 2) + log_scale * ramp
        tracks[:, slot, 4] = turn * ramp
    return tracks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_still_track_gives_the_first_frame_back(seed: int) -> None:
    _, picture = first_frame(seed)
    lifted = lift_objects(picture, image_objects(Image.fromarray(picture), 128, 128))
    assert lifted.objects
    frames = to_uint8(move_objects(lifted, tracks_for(lifted, 3, 0.0, 0.0, 0.0), tuple(range(3))))
    for frame in frames:
        assert psnr(frame, picture) >= 35.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_moved_objects_keep_colour_and_shape_and_follow_the_track(seed: int) -> None:
    """Moved right by a fifth of the frame, shrunk to 70% and turned a quarter: the analyser finds the
    first frame's objects, in their colours and shapes, going right and shrinking by that much."""
    scene, picture = first_frame(seed)
    lifted = lift_objects(picture, image_objects(Image.fromarray(picture), 128, 128))
    tracks = tracks_for(lifted, 8, 0.4, math.log(0.7), math.pi / 2)
    found = analyse_clip(to_uint8(move_objects(lifted, tracks, tuple(range(len(lifted.objects))))))
    truth = sorted((o.colour, o.shape) for o in scene.objects)
    assert sorted((o.colour, o.shape) for o in found.objects) == truth
    for track in found.objects:
        dx, dy = track.displacement
        assert dx == pytest.approx(0.4 * 64, abs=2.0) and abs(dy) <= 2.0, track.displacement
        assert track.scale_ratio == pytest.approx(0.7**2, rel=0.15)


def test_resample_tracks_keeps_the_ends_and_is_linear_between() -> None:
    tracks = torch.zeros(3, 2, 5)
    tracks[:, 0, 0] = 1.0
    tracks[:, 0, 1] = torch.tensor([0.0, 0.5, 1.0])
    out = resample_tracks(tracks, 5)
    assert out.shape == (5, 2, 5)
    torch.testing.assert_close(out[:, 0, 1], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert out[:, 0, 0].tolist() == [1.0] * 5 and out[:, 1, 0].tolist() == [0.0] * 5
    assert resample_tracks(tracks, 3) is tracks


def test_object_mattes_cover_the_objects_and_nothing_else() -> None:
    scene, picture = first_frame(4)
    rows, mattes = object_mattes(picture)
    assert rows.shape == (128, 3)
    assert sorted(m.colour for m in mattes) == sorted(o.colour for o in scene.objects)
    for matte in mattes:
        assert matte.coverage.shape == (128, 128) and 0 <= matte.coverage.min() <= matte.coverage.max() <= 1
        assert matte.coverage.sum() > 20  # pixels
    _, none = object_mattes(np.full((64, 64, 3), 128, np.uint8))
    assert none == []


def test_moved_start_encodes_the_moved_frames_with_the_first_frame_first() -> None:
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(None)
    scene, picture = first_frame(5)
    seen = image_objects(Image.fromarray(picture), 128, 128)
    context, mask, _, _ = pipe.encode_prompts("a red square moving right, gray background", None)
    prior, movq = pipe.components.layout_prior, pipe.components.movq
    latents = moved_start(prior, movq, context, mask, picture, seen, 5)
    assert latents.shape == (5, 4, 16, 16) and torch.isfinite(latents).all()
    with torch.no_grad():
        decoded = to_uint8(((movq.decode(latents[:1].to(next(movq.parameters()).dtype)) + 1) / 2).float())
    assert psnr(decoded[0], picture) >= 25.0  # keyframe 0: the objects where the image has them
    assert moved_start(prior, movq, context, mask, picture, [], 5) is None
    assert moved_start(None, movq, context, mask, picture, seen, 5) is None


def test_moved_is_an_image_start() -> None:
    assert check_image_start("moved") == "moved"
    with pytest.raises(ValueError, match="allowed: objects, moved, layout, image"):
        check_image_start("pixels")
