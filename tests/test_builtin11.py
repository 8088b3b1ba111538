"""The Kandinsky Video 1.1 parts of a 1.0-layout model (the built-in one): the temporal decoder and the
image-to-video keyframe U-Net start as the shipped networks, train as stages, save and load strictly,
and drive ``generate --image`` / ``--decoder``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusionframes.io.checkpoints import BUILTIN_DIR, load_model_folder, write_model_folder
from fusionframes.models.movq import decode_clip
from fusionframes.pipelines.builtin11 import (
    DECODE_OVERLAP,
    DECODE_WINDOW,
    align_layout,
    check_image_start,
    decode_frames,
    first_frame_inputs,
)
from fusionframes.pipelines.stages import temporal_positions
from fusionframes.training.config import config_from_dict
from fusionframes.training.loop import train
from fusionframes.training.stages11 import grow_image_keyframe_unet, grow_video_decoder

BUILTIN_HAS_11 = (BUILTIN_DIR / "video_movq").is_dir() and (BUILTIN_DIR / "image_keyframe_unet").is_dir()


@pytest.fixture
def tiny(tiny_model_dir: Path):
    return load_model_folder(tiny_model_dir)


def test_grown_video_decoder_starts_as_the_image_decoder(tiny) -> None:
    components = grow_video_decoder(tiny)
    latents = torch.randn(5, 4, 8, 8)
    with torch.no_grad():
        image = torch.cat([components.movq.decode(row[None]) for row in latents])
        video = components.video_movq.decode(latents)
    assert components.video_movq.config.clip_decoder
    torch.testing.assert_close(video, image, atol=1e-5, rtol=0)


def test_grown_image_unet_without_image_matches_the_keyframe_unet(tiny) -> None:
    components = grow_image_keyframe_unet(tiny)
    old, new = components.keyframe_unet, components.image_keyframe_unet
    f = old.config.num_frames
    x = torch.randn(f, 4, 8, 8)
    time = torch.full((f,), 500)
    context = torch.randn(f, 3, old.config.context_dim)
    mask = torch.ones(f, 3, dtype=torch.bool)
    positions = temporal_positions(f)
    first = first_frame_inputs(torch.randn(1, 4, 8, 8), f)  # zero new weights: the image changes nothing yet
    level = torch.full((f,), 20)
    with torch.no_grad():
        want = old(x, time, context, mask, positions, num_frames=f)
        got = new(
            torch.cat([x, first], 1), time, context, mask, positions, num_frames=f, noise_aug_time=level
        )
    assert new.config.num_channels == 9 and new.config.noise_augmentation
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_grown_image_unet_keeps_the_built_in_extension() -> None:
    """The built-in keyframe U-Net has the text-aware frame embedding (a subclass of the released U-Net):
    its image-to-video copy must be the same class with every one of its weights, not the released one."""
    shipped = load_model_folder(BUILTIN_DIR)
    shipped.image_keyframe_unet = None  # grown again from the keyframe U-Net, not the trained one
    components = grow_image_keyframe_unet(shipped)
    old, new = components.keyframe_unet, components.image_keyframe_unet
    assert old.config.text_frame_embed and type(new) is type(old)
    new_state = new.state_dict()
    for key, value in old.state_dict().items():
        if key != "in_layer.weight":
            assert torch.equal(new_state[key], value), key
    assert torch.equal(new_state["in_layer.weight"][:, :4], old.state_dict()["in_layer.weight"])


@pytest.mark.parametrize("start", [(9, 10), (0, 0), (13, 2)])
def test_aligned_layout_keeps_the_track_and_takes_the_image_offset(start: tuple[int, int]) -> None:
    """A square moving down one latent pixel a keyframe, on a flat background: moved so that keyframe 0
    lies on the image's square, every keyframe keeps its step from the first (borders repeated)."""
    layout = torch.full((3, 4, 16, 16), 0.3)
    for f in range(3):
        layout[f, :, 2 + f : 5 + f, 3:6] = 1.0
    first = torch.full((4, 16, 16), 0.3)
    first[:, start[0] : start[0] + 3, start[1] : start[1] + 3] = 1.0
    moved = align_layout(layout, first)
    corners = [(moved[f, 0] > 0.5).nonzero()[0].tolist() for f in range(3)]
    assert corners == [[start[0] + f, start[1]] for f in range(3)]
    assert moved.shape == layout.shape and torch.allclose(moved[:, :, 15, 15], torch.tensor(0.3))


def test_image_start_names_what_is_allowed() -> None:
    assert check_image_start("image") == "image"
    allowed = "objects, moved, layout, image"
    with pytest.raises(ValueError, match=f"image_start: unknown .prior.; allowed: {allowed}"):
        check_image_start("prior")


def test_first_frame_inputs_mark_row_zero_only() -> None:
    first = torch.randn(2, 4, 3, 3)
    rows = first_frame_inputs(first, 3, keep=torch.tensor([True, False]))
    assert rows.shape == (6, 5, 3, 3)
    torch.testing.assert_close(rows[0, :4], first[0])
    assert rows[0, 4].eq(1).all() and rows[1:].eq(0).all()


def test_both_parts_save_and_load_strictly(tiny, tmp_path: Path) -> None:
    components = grow_image_keyframe_unet(grow_video_decoder(tiny))
    folder = write_model_folder(components, tmp_path / "m", text_encoder_dir=Path(components.text_encoder))
    loaded = load_model_folder(folder)
    for name in ("video_movq", "image_keyframe_unet"):
        for (key, a), (_, b) in zip(
            getattr(components, name).state_dict().items(),
            getattr(loaded, name).state_dict().items(),
            strict=True,
        ):
            torch.testing.assert_close(a, b, msg=key)



def test_add_parts_takes_a_fine_tuned_image_decoder_only_with_the_same_encoder(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from fusionframes.training.stages11 import add_parts

    tuned = load_model_folder(tiny_model_dir)
    with torch.no_grad():
        for name, weight in tuned.movq.decoder.named_parameters():
            weight.add_(0.01 * (1 + len(name) % 3))
    tuned_dir = write_model_folder(tuned, tmp_path / "tuned", text_encoder_dir=Path(tuned.text_encoder))
    out = load_model_folder(add_parts(tiny_model_dir, tmp_path / "out", image_decoder=tuned_dir))
    torch.testing.assert_close(out.movq.state_dict(), tuned.movq.state_dict())
    base = load_model_folder(tiny_model_dir)
    torch.testing.assert_close(out.keyframe_unet.state_dict(), base.keyframe_unet.state_dict())
    with torch.no_grad():
        next(tuned.movq.encoder.parameters()).add_(0.01)
    moved = write_model_folder(tuned, tmp_path / "moved", text_encoder_dir=Path(tuned.text_encoder))
    with pytest.raises(ValueError, match="image_decoder: the MoVQ encoder of .* differs"):
        add_parts(tiny_model_dir, tmp_path / "bad", image_decoder=moved)

@pytest.mark.slow
def test_video_decoder_and_image_stages_train(tiny_model_dir: Path, tmp_path: Path) -> None:
    from test_training import BASE, make_clips

    clips = make_clips(tmp_path / "clips")
    base = {k: v for k, v in BASE.items() if k not in ("model", "model_overrides", "new_text_encoder")}
    base.update({"init_from": str(tiny_model_dir), "size": 64, "batch_size": 2, "max_steps": 3})
    video = {**base, "stage": "movq", "video_decoder": True, "video_clip_frames": 4, "video_crop": 4}
    train(config_from_dict(video), clips, tmp_path / "v", progress=False)
    grown = load_model_folder(tmp_path / "v" / "model")
    assert grown.video_movq is not None and grown.image_keyframe_unet is None
    merges = [p for n, p in grown.video_movq.named_parameters() if "temporal_merge" in n]
    assert any(p.abs().sum() > 0 for p in merges)  # the blend moved off zero
    torch.testing.assert_close(grown.movq.state_dict(), load_model_folder(tiny_model_dir).movq.state_dict())
    image = {**base, "stage": "keyframes", "first_frame_condition": True, "train_text_encoder": False}
    train(config_from_dict(image), clips, tmp_path / "k", progress=False)
    made = load_model_folder(tmp_path / "k" / "model")
    weight = made.image_keyframe_unet.in_layer.weight
    assert weight[:, 4:].abs().sum() > 0  # the condition channels learned something
    start = load_model_folder(tiny_model_dir)
    torch.testing.assert_close(made.keyframe_unet.state_dict(), start.keyframe_unet.state_dict())
    torch.testing.assert_close(made.keyframe_null, start.keyframe_null)


def test_first_frame_condition_keeps_the_text_encoder_frozen() -> None:
    with pytest.raises(ValueError, match="train_text_encoder"):
        config_from_dict({"stage": "keyframes", "first_frame_condition": True})
    with pytest.raises(ValueError, match="video_decoder"):
        config_from_dict({"stage": "keyframes", "video_decoder": True})


# ---------------------------------------------------------------------------------------------
# The shipped parts


def seam_ratio(frames: torch.Tensor, window: int, overlap: int) -> tuple[float, float]:
    """Mean frame-to-frame change across window boundaries and inside windows (0-1 pixels)."""
    change = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))
    stride = window - overlap
    boundaries = {start + window - 1 for start in range(0, len(frames) - window, stride)}
    across = [change[i].item() for i in sorted(boundaries) if i < len(change)]
    inside = [change[i].item() for i in range(len(change)) if i not in boundaries]
    return float(np.mean(across)), float(np.mean(inside))


@pytest.mark.skipif(not BUILTIN_HAS_11, reason="the built-in model has no 1.1 parts in this checkout")
def test_shipped_video_decoder_loads_strictly_and_decodes_any_length() -> None:
    components = load_model_folder(BUILTIN_DIR)  # strict: every key and shape
    assert components.video_movq.config.clip_decoder
    torch.manual_seed(0)
    for frames in (1, 2, 5, DECODE_WINDOW + 3):
        video = decode_frames(components, torch.randn(frames, 4, 16, 16), "video", 4, False)
        assert video.shape == (frames, 3, 128, 128) and torch.isfinite(video).all()


@pytest.mark.slow
@pytest.mark.skipif(not BUILTIN_HAS_11, reason="the built-in model has no 1.1 parts in this checkout")
def test_shipped_video_decoder_chunked_decode_has_no_seam() -> None:
    """A 29-frame synthetic clip decoded in overlapping windows: the change across a window boundary is
    at most 1.5x the mean change inside windows, plus 0.002 (0.5/255) for the static frames of a clip."""
    from fusionframes.synthetic import render_clip, sample_scene

    components = load_model_folder(BUILTIN_DIR)
    scene = sample_scene(np.random.default_rng([7, 7]))
    truth = torch.from_numpy(render_clip(scene, 128, 29)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        latents = components.movq.encode(truth)
        video = decode_clip(components.video_movq, latents, DECODE_WINDOW, DECODE_OVERLAP)
    across, inside = seam_ratio((video + 1) / 2, DECODE_WINDOW, DECODE_OVERLAP)
    assert across <= 1.5 * inside + 0.002, (across, inside)


@pytest.mark.slow
@pytest.mark.skipif(not BUILTIN_HAS_11, reason="the built-in model has no 1.1 parts in this checkout")
def test_generate_image_keeps_a_synthetic_first_frame(tmp_path: Path) -> None:
    from fusionframes.cli.app import main
    from fusionframes.synthetic import caption, render_clip, sample_scene

    rng = np.random.default_rng([2026, 12, 2])  # a seed no training shard uses
    scene = sample_scene(rng)
    first = render_clip(scene, 128, 29)[0]
    Image.fromarray(first).save(tmp_path / "first.png")
    out = tmp_path / "frames"  # a folder of PNG frames: lossless, so only the model is measured
    args = ["generate", caption(scene, rng), "--image", str(tmp_path / "first.png"), "--steps", "10"]
    assert main([*args, "--fps", "low", "--seed", "1", "-o", f"{out}/"]) == 0
    frame0 = np.asarray(Image.open(sorted(out.glob("*.png"))[0]).convert("RGB"))
    mse = float(np.mean((frame0.astype(np.float64) - first.astype(np.float64)) ** 2))
    assert 10 * math.log10(255**2 / mse) >= 25.0


def test_image_objects_reads_a_synthetic_first_frame() -> None:
    from fusionframes.pipelines.builtin11 import image_objects
    from fusionframes.synthetic import render_clip, sample_scene

    scene = sample_scene(np.random.default_rng([2026, 12, 3]))
    first = Image.fromarray(render_clip(scene, 128, 29)[0])
    seen = sorted(image_objects(first, 128, 128), key=lambda o: o.colour)
    truth = sorted(scene.objects, key=lambda o: o.colour)
    assert [(o.colour, o.shape) for o in seen] == [(o.colour, o.shape) for o in truth]
    assert image_objects(Image.new("RGB", (128, 128), (128, 128, 128)), 128, 128) == []


@pytest.mark.parametrize("place", [(0.25, 0.7), (0.75, 0.3)])
def test_objects_start_draws_the_seen_object_where_the_image_has_it(place: tuple[float, float]) -> None:
    """The built-in prior's start for a one-object prompt, given an object seen at ``place``: keyframe 0's
    foreground (the latent less its background) peaks within two latent pixels of that place."""
    from fusionframes.layout_prior.start import SeenObject, objects_start
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(None)
    context, mask, _, _ = pipe.encode_prompts("a red square moving right, gray background", None)
    seen = [SeenObject("red", "square", place[0], place[1], 0.12)]
    start = objects_start(pipe.components.layout_prior, context, mask, 4, (4, 16, 16), seen)
    assert start.shape == (4, 4, 16, 16)
    foreground = (start[0] - start[0].flatten(1).median(dim=1).values[:, None, None]).abs().sum(0)
    row, col = divmod(int(foreground.argmax()), 16)
    assert abs(col + 0.5 - place[0] * 16) <= 2 and abs(row + 0.5 - place[1] * 16) <= 2, (row, col)


def test_only_a_prior_with_labelled_slots_draws_seen_objects() -> None:
    """The objects start needs labelled object slots; without them the pipeline takes the layout start
    (``draws_objects`` decides which) instead of failing after the text is encoded."""
    from fusionframes.config import LayoutPriorConfig
    from fusionframes.io.checkpoints import load_model
    from fusionframes.layout_prior.model import LayoutPrior
    from fusionframes.layout_prior.start import SeenObject, draws_objects, objects_start

    small = dict(context_dim=6, hidden_dim=8, num_frames=4, latent_height=4, latent_width=4, channels=(16, 8))
    unlabelled = LayoutPrior(LayoutPriorConfig(**small))
    assert draws_objects(load_model(None).layout_prior)
    assert not draws_objects(None) and not draws_objects(unlabelled)
    seen = [SeenObject("red", "square", 0.5, 0.5, 0.1)]
    with pytest.raises(ValueError, match="no labelled object slots"):
        objects_start(unlabelled, torch.zeros(1, 3, 6), torch.ones(1, 3), 4, (4, 4, 4), seen)
