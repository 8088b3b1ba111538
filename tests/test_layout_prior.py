"""The text-to-layout prior: config, resampling, fitting, sampling from it, the model-folder round trip."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from fusionframes.cli import main
from fusionframes.config import LayoutPriorConfig, ModelConfig, SamplingDefaults, TrainedWith
from fusionframes.diffusion.parameterisation import Parameterisation
from fusionframes.diffusion.samplers import SAMPLERS, run_sampler
from fusionframes.io.checkpoints import load_model_folder, write_model_folder
from fusionframes.layout_prior.fitting import (
    PriorTraining,
    add_layout_prior,
    fit_layout_prior,
    foreground_weights,
    keyframe_labels,
    keyframe_tracks,
    label_loss,
    track_loss,
)
from fusionframes.layout_prior.model import (
    SLOT_CODE_DIM,
    SPRITE_CHANNELS,
    LayoutPrior,
    ObjectSprites,
    label_groups,
    object_maps,
    one_hot_labels,
    pooled_text,
    read_tokens,
)
from fusionframes.layout_prior.start import keyframe_start
from fusionframes.pipelines.text_to_video import TextToVideoPipeline


def test_config_round_trip_and_checks() -> None:
    config = dataclasses.replace(ModelConfig(), layout_prior=LayoutPriorConfig(num_frames=4))
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert "layout_prior" not in ModelConfig().to_dict()  # the released model's config is unchanged
    with pytest.raises(ValueError, match="LayoutPriorConfig.hidden_dim"):
        LayoutPriorConfig(hidden_dim=0)
    for bad in ((), (12,), (16, 0), [16, 8]):
        with pytest.raises(ValueError, match="LayoutPriorConfig.channels"):
            LayoutPriorConfig(channels=bad)
    with pytest.raises(ValueError, match="divisible by 4"):
        LayoutPriorConfig(channels=(32, 16, 8), latent_height=6)
    with pytest.raises(ValueError, match="LayoutPriorConfig.object_slots: must be an integer >= 0"):
        LayoutPriorConfig(object_slots=-1)
    with_slots = dataclasses.replace(ModelConfig(), layout_prior=LayoutPriorConfig(object_slots=2))
    assert ModelConfig.from_dict(with_slots.to_dict()).layout_prior.object_slots == 2
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="layout_prior_strength"):
            SamplingDefaults(layout_prior_strength=bad)


def test_removed_settings_load_only_at_the_value_every_folder_had() -> None:
    """Folders written before ``layout_prior_blur``, ``keyframe_prediction`` and ``position_embed`` were
    removed state their no-op values and still load; any other value would sample differently, so it
    fails by name."""
    data = ModelConfig().to_dict()
    data["sampling"].update(layout_prior_blur=0.0, keyframe_prediction="epsilon")
    data["keyframe_unet"]["position_embed"] = False
    assert ModelConfig.from_dict(data) == ModelConfig()
    for part, key, value in (
        ("sampling", "layout_prior_blur", 1.0),
        ("sampling", "keyframe_prediction", "v"),
        ("keyframe_unet", "position_embed", True),
    ):
        bad = ModelConfig().to_dict()
        bad[part][key] = value
        with pytest.raises(ValueError, match=rf"\.{key}: removed \(no shipped model used it\)"):
            ModelConfig.from_dict(bad)


def test_pooled_text_ignores_padding() -> None:
    context = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pooled_text(context, mask), torch.tensor([[2.0, 3.0]]))


def test_layout_is_resampled_to_the_video() -> None:
    assert keyframe_start(None, torch.zeros(1, 3, 6), torch.ones(1, 3), 4, (4, 4, 4)) is None
    torch.manual_seed(0)
    prior = LayoutPrior(
        LayoutPriorConfig(
            context_dim=6, hidden_dim=8, num_frames=4, latent_height=4, latent_width=4, channels=(16, 8)
        )
    )
    context, mask = torch.randn(1, 3, 6), torch.ones(1, 3)
    same = keyframe_start(prior, context, mask, 4, (4, 4, 4))
    assert torch.allclose(same, prior(context, mask)[0])
    longer = keyframe_start(prior, context, mask, 7, (4, 8, 6))
    assert longer.shape == (7, 4, 8, 6)
    wide = keyframe_start(prior, context, mask, 4, (4, 8, 6))
    assert torch.allclose(longer[0], wide[0], atol=1e-6) and torch.allclose(longer[-1], wide[-1], atol=1e-6)
    assert torch.allclose(longer[2], wide[1], atol=1e-5)  # frame 2 of 7 is frame 1 of 4
    assert torch.allclose(longer[3], (wide[1] + wide[2]) / 2, atol=1e-5)  # frame 3 of 7 sits halfway
    with pytest.raises(ValueError, match="latent_shape"):
        keyframe_start(prior, context, mask, 4, (3, 4, 4))


def _moving_blobs(n: int, frames: int = 4, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents of a bright square moving right (label 0) or left (label 1), and their labels."""
    latents = torch.zeros(n, frames, 4, size, size)
    labels = torch.arange(n) % 2
    for i in range(n):
        for f in range(frames):
            x = 1 + 2 * f if labels[i] == 0 else size - 3 - 2 * f
            latents[i, f, :, 3:5, x : x + 2] = 2.0
    return latents, labels


def test_foreground_weights_mark_the_moving_object() -> None:
    latents, _ = _moving_blobs(2)
    weights = foreground_weights(latents, 20.0, 0.2)
    assert weights.shape == (2, 4, 1, 8, 8)
    moving = latents.abs().sum(2, keepdim=True) > 0
    assert torch.all(weights[moving] == 21.0)
    assert torch.all(weights[~moving] == 1.0)


def _caption_tokens(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``[N, D]`` as two-token captions ``[N, 2, D]`` (the second token padding), with masks."""
    context = torch.stack([features, torch.full_like(features, 50.0)], 1)
    return context, torch.tensor([[True, False]]).expand(features.shape[0], 2)


@pytest.mark.slow
def test_fit_learns_which_way_a_word_moves_things() -> None:
    torch.manual_seed(0)
    latents, labels = _moving_blobs(128)
    # The direction shows in one feature of four, and by far less than the others vary (as in real text).
    features = torch.randn(128, 4) * 3.0
    features[:, 2] = labels.float() * 0.2
    context, mask = _caption_tokens(features)
    settings = PriorTraining(steps=300, batch_size=32, hidden_dim=32, holdout=16, seed=0)
    prior, report = fit_layout_prior(context, mask, latents, settings, progress=False)
    assert report["holdout_clips"] == 16
    assert report["holdout_mse"] < report["holdout_mse_of_mean"]
    assert report["loss_last_100"] < report["loss_first_100"]
    templates = [latents[labels == label][0] for label in (0, 1)]
    for label in (0, 1):
        rows = labels == label
        out = prior(context[rows][-4:], mask[rows][-4:])  # held-out clips of this direction
        own = ((out - templates[label]) ** 2).mean().item()
        other = ((out - templates[1 - label]) ** 2).mean().item()
        assert own < 0.5 * other, (label, own, other)


def test_token_reader_tells_the_first_word_from_the_last_by_order() -> None:
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])  # the last is padding
    mask = torch.tensor([[True, True, True, False]])
    keys = torch.zeros_like(tokens)  # every word alike to the query: only the order decides
    queries = torch.zeros(3, 2)
    read = read_tokens(tokens, mask, queries, keys, torch.tensor([-10.0, 10.0, 0.0])).view(3, 2)
    assert torch.allclose(read[0], tokens[0, 0], atol=1e-6)  # the first word
    assert torch.allclose(read[1], tokens[0, 2], atol=1e-6)  # the last valid word, never the padding
    assert torch.allclose(read[2], tokens[0, :3].mean(0), atol=1e-6)  # no slope: the plain mean


def test_priors_without_the_word_order_slopes_are_refused() -> None:
    """Strict loading fills nothing in (it used to read a missing ``tracker.order`` as zeros); the
    shipped built-in prior carries the slopes."""
    from fusionframes.io.checkpoints import CheckpointError, load_strict

    config = LayoutPriorConfig(context_dim=8, hidden_dim=16, channels=(16, 8), object_slots=1)
    older = {k: v for k, v in LayoutPrior(config).state_dict().items() if k != "tracker.order"}
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): tracker.order"):
        load_strict(LayoutPrior(config), older, "older prior")


def test_object_maps_centre_rotate_and_leave_out_absent_slots() -> None:
    tracks = torch.zeros(1, 2, 2, 5)
    tracks[0, :, 0] = torch.tensor([1.0, 0.5, -0.5, math.log(0.25), 0.0])  # right of centre, above it
    codes = torch.zeros(1, 2, SLOT_CODE_DIM)
    codes[0, 0, 1] = 3.0
    maps = object_maps(tracks, codes, 8, 8)
    per_slot = 4 + SLOT_CODE_DIM
    assert maps.shape == (2, 2 * per_slot, 8, 8)
    bump = maps[0, 2]
    assert divmod(bump.argmax().item(), 8) in {(1, 5), (1, 6), (2, 5), (2, 6)}  # nearest the centre
    assert torch.all(maps[:, 3] == 1.0)  # slot 0 present everywhere
    assert torch.allclose(maps[1, 5], 3.0 * bump)  # its code painted on its bump, in every frame
    assert torch.all(maps[:, 4] == 0.0) and torch.all(maps[:, 6:per_slot] == 0.0)
    assert torch.all(maps[:, per_slot:] == 0.0)  # slot 1 absent: all zeros
    turned = tracks.clone()
    turned[..., 4] = math.pi / 2
    quarter = object_maps(turned, codes, 8, 8)
    # a quarter turn maps the object's own x axis onto the image's y axis
    assert torch.allclose(quarter[0, 0], maps[0, 1], atol=1e-5)
    assert torch.allclose(quarter[0, 1], -maps[0, 0], atol=1e-5)
    with pytest.raises(ValueError, match="tracks: last dimension must be 5"):
        object_maps(torch.zeros(1, 1, 1, 4), codes, 4, 4)
    with pytest.raises(ValueError, match="codes: must be"):
        object_maps(tracks, torch.zeros(1, 3, SLOT_CODE_DIM), 4, 4)


def test_keyframe_tracks_read_the_synthetic_ground_truth() -> None:
    import numpy as np

    from fusionframes.synthetic import ground_truth, sample_scene

    rng = np.random.default_rng(3)
    scenes = [sample_scene(rng, two_objects=1.0), sample_scene(rng, two_objects=0.0)]
    metas = [ground_truth(scene, 64, 13) for scene in scenes]
    tracks = keyframe_tracks(metas, frames=4, stride=4, slots=2)
    assert tracks.shape == (2, 4, 2, 5)
    assert torch.all(tracks[0, :, :, 0] == 1.0) and torch.all(
        tracks[1, :, 1] == 0.0
    )  # one object: slot 1 empty
    last = metas[0]["tracks"][1]["frames"][12]
    assert tracks[0, 3, 1, 1].item() == pytest.approx(last["centroid"][0] / 32 - 1, abs=1e-5)
    assert tracks[0, 3, 1, 3].item() == pytest.approx(math.log(last["radius"] / 32), abs=1e-5)
    with pytest.raises(ValueError, match="clip 1 .* no object tracks; object_slots"):
        keyframe_tracks([metas[0], {"caption": "a red circle"}], frames=4, stride=4, slots=2)


def _blob_tracks(labels: torch.Tensor, frames: int = 4, size: int = 8) -> torch.Tensor:
    """The tracks of :func:`_moving_blobs`' squares, in the prior's units."""
    tracks = torch.zeros(len(labels), frames, 1, 5)
    for i, label in enumerate(labels.tolist()):
        for f in range(frames):
            x = 1 + 2 * f if label == 0 else size - 3 - 2 * f
            tracks[i, f, 0] = torch.tensor([1.0, (x + 1) / size * 2 - 1, 0.0, math.log(2 / size), 0.0])
    return tracks


@pytest.mark.slow
def test_tracking_prior_learns_the_track_and_draws_along_it() -> None:
    torch.manual_seed(0)
    latents, labels = _moving_blobs(96)
    tracks = _blob_tracks(labels)
    features = torch.randn(96, 4)
    features[:, 2] = labels.float() * 2 - 1
    context, mask = _caption_tokens(features)
    settings = PriorTraining(
        steps=200, batch_size=16, hidden_dim=32, channels=(16, 8), holdout=16, object_slots=1, track_steps=300
    )
    with pytest.raises(ValueError, match=r"tracks: object_slots 1 needs tracks \[96, 4, 1, 5\], got None"):
        fit_layout_prior(context, mask, latents, settings, progress=False)
    prior, report = fit_layout_prior(context, mask, latents, settings, tracks, progress=False)
    assert report["track_loss_last_100"] < report["track_loss_first_100"]
    held = slice(80, None)
    predicted = prior.track_logits(context[held], mask[held])
    moved = predicted[:, -1, 0, 1] - predicted[:, 0, 0, 1]
    assert torch.all((moved > 0) == (labels[held] == 0)), moved  # right for label 0, left for label 1
    mean_track = tracks[:80].mean(0, keepdim=True).expand_as(tracks[held]).clone()
    mean_track[..., 0] = 10.0  # a certain presence logit: only the geometry differs
    assert track_loss(predicted, tracks[held]) < 0.5 * track_loss(mean_track, tracks[held])
    out = prior(context[held], mask[held])
    own = ((out - latents[held]) ** 2).mean().item()
    swapped = ((out - latents[held].flip(0)) ** 2).mean().item()  # held-out labels alternate
    assert own < 0.5 * swapped


def test_object_labels_are_checked() -> None:
    labels = ("colour:red", "colour:blue", "shape:star")
    config = dataclasses.replace(
        ModelConfig(), layout_prior=LayoutPriorConfig(object_slots=1, object_labels=labels)
    )
    assert ModelConfig.from_dict(config.to_dict()).layout_prior.object_labels == labels
    for bad, why in (
        (("red",), "must be 'key:value'"),
        (("a:b", "c:d", "a:e"), "next to each other"),
        (("a:b", "a:b"), "distinct"),
        (["a:b"], "tuple"),
    ):
        with pytest.raises(ValueError, match=f"LayoutPriorConfig.object_labels: .*{why}"):
            LayoutPriorConfig(object_slots=1, object_labels=bad)
    with pytest.raises(ValueError, match="object_labels: label objects only with object_slots >= 1"):
        LayoutPriorConfig(object_labels=("a:b",))
    with pytest.raises(ValueError, match="object_label_keys: label objects only with object_slots"):
        PriorTraining(object_label_keys=("colour",))
    with pytest.raises(ValueError, match="object_label_keys: must be a tuple of names without ':'"):
        PriorTraining(object_slots=1, object_label_keys=("colour:red",))


def test_label_groups_pick_one_value_per_key() -> None:
    names = ("colour:blue", "colour:red", "shape:circle", "shape:square", "shape:star")
    assert label_groups(names) == [slice(0, 2), slice(2, 5)]
    logits = torch.tensor([[[0.1, 2.0, -1.0, 3.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0]]])
    picked = one_hot_labels(logits, names)
    assert picked[0, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert picked.sum(-1).tolist() == [[2.0, 2.0]]  # ties still pick one value of each key
    target = torch.zeros(1, 2, 5)
    target[0, 0, 1] = target[0, 0, 3] = 1.0  # slot 1 is empty: left out of the loss
    assert label_loss(logits, target, names) < label_loss(-logits, target, names)


def test_keyframe_labels_read_each_object_in_caption_order() -> None:
    import numpy as np

    from fusionframes.synthetic import ground_truth, sample_scene

    rng = np.random.default_rng(3)
    scenes = [sample_scene(rng, two_objects=1.0), sample_scene(rng, two_objects=0.0)]
    metas = [ground_truth(scene, 64, 13) for scene in scenes]
    names, labels = keyframe_labels(metas, 2, ("colour", "shape"))
    assert list(names) == sorted(n for n in names if n.startswith("colour:")) + sorted(
        n for n in names if n.startswith("shape:")
    )
    assert labels.shape == (2, 2, len(names))
    for slot, obj in enumerate(scenes[0].objects):
        assert {names[i] for i in labels[0, slot].nonzero().flatten().tolist()} == {
            f"colour:{obj.colour}",
            f"shape:{obj.shape}",
        }
    assert labels[1, 1].sum() == 0  # one object: the second slot is empty
    with pytest.raises(ValueError, match="clip 0 .* without 'size'; object_label_keys"):
        keyframe_labels(metas, 2, ("size",))


def test_sprites_move_with_their_object_and_vanish_when_it_is_absent() -> None:
    torch.manual_seed(0)
    sprites = ObjectSprites(labels=3)
    tracks = torch.zeros(1, 1, 2, 5)
    tracks[0, 0, 0] = torch.tensor([1.0, -0.25, 0.0, math.log(0.2), 0.3])
    labels = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])
    here = sprites(tracks, labels, 16, 16)
    assert here.shape == (1, SPRITE_CHANNELS, 16, 16)
    moved = tracks.clone()
    moved[0, 0, 0, 1] += 4 / 16 * 2  # four latent pixels to the right
    there = sprites(moved, labels, 16, 16)
    assert torch.allclose(there[..., 6:], here[..., 2:-4], atol=1e-5)  # the same drawing, shifted
    assert here[..., 14:].abs().max() < 0.05 * here.abs().max()  # faded out far away; slot 1 draws nothing
    other = labels.clone()
    other[0, 0] = torch.tensor([1.0, 0.0, 0.0])
    assert not torch.allclose(sprites(tracks, other, 16, 16), here)  # another label, another drawing


@pytest.mark.slow
def test_labelling_prior_learns_what_each_object_looks_like() -> None:
    torch.manual_seed(0)
    latents, direction = _moving_blobs(96)
    tracks = _blob_tracks(direction)
    tone = (torch.arange(96) // 2) % 2  # bright or dark, independent of the direction
    latents = latents * (1 - 2 * tone.float()).view(-1, 1, 1, 1, 1)
    names = ("tone:bright", "tone:dark")
    labels = torch.nn.functional.one_hot(tone, 2).float().view(96, 1, 2)
    features = torch.randn(96, 4)
    features[:, 2] = direction.float() * 2 - 1
    features[:, 3] = tone.float() * 2 - 1
    context, mask = _caption_tokens(features)
    settings = PriorTraining(
        steps=200,
        batch_size=16,
        hidden_dim=32,
        channels=(16, 8),
        holdout=16,
        object_slots=1,
        object_label_keys=("tone",),
        track_steps=300,
    )
    with pytest.raises(ValueError, match="labels: needed exactly when settings.object_label_keys is set"):
        fit_layout_prior(context, mask, latents, settings, tracks, progress=False)
    prior, report = fit_layout_prior(context, mask, latents, settings, tracks, False, (names, labels))
    assert prior.config.object_labels == names
    assert report["holdout_objects_labelled_right"] == 1.0
    held = slice(80, None)
    out = prior(context[held], mask[held])
    own = ((out - latents[held]) ** 2).mean().item()
    flipped = ((out + latents[held]) ** 2).mean().item()  # the other tone at the same places
    assert own < 0.5 * flipped


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="steps"):
        PriorTraining(steps=0)
    with pytest.raises(ValueError, match="foreground_weight"):
        PriorTraining(foreground_weight=-1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        PriorTraining(learning_rate=0.0)
    with pytest.raises(ValueError, match="object_slots"):
        PriorTraining(object_slots=-2)
    with pytest.raises(ValueError, match="track_steps"):
        PriorTraining(track_steps=0)


def _blank_model(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)  # an epsilon model that sees no noise: x0 = x / sqrt(alpha_bar)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_start_from_a_noised_sample(name: str) -> None:
    param = Parameterisation(TrainedWith(thresholding=None))
    schedule = param.schedule(10, run=3, scheduler=name)
    start = torch.full((2, 4, 4, 4), 1.5)
    noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    calls = []
    out = run_sampler(
        param.denoiser(_blank_model, schedule),
        schedule.start(noise, start),
        schedule,
        torch.Generator().manual_seed(1),
        lambda i, n: calls.append(n),
    )
    assert calls[-1] == 3 and len(calls) == 3  # 10 steps, 7 skipped
    assert torch.isfinite(out).all()
    # With epsilon 0 the model's x0 is the input rescaled, so the result keeps the start's level (1.5);
    # from pure noise it would centre on 0.
    assert abs(out.mean().item() - 1.5) < 0.3


def test_a_start_must_leave_a_step() -> None:
    param = Parameterisation(TrainedWith())
    for scheduler in ("ddpm", "ddim"):
        with pytest.raises(ValueError, match="steps: a run of 0 of 5 steps"):
            param.schedule(5, run=0, scheduler=scheduler)


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fusionframes.synthetic import write_shards

    out = tmp_path_factory.mktemp("shards") / "clips"
    write_shards(out, 12, size=64, frames=13, seed=0, shard_size=12)
    return out


@pytest.mark.slow
def test_add_layout_prior_writes_a_model_the_pipeline_uses(
    tiny_model_dir: Path, tiny_shards: Path, tmp_path: Path
) -> None:
    settings = PriorTraining(
        steps=20,
        batch_size=4,
        hidden_dim=16,
        channels=(16, 8),
        holdout=2,
        object_slots=2,
        object_label_keys=("colour", "shape"),
        track_steps=20,
    )
    out, report = add_layout_prior(tiny_model_dir, tiny_shards, tmp_path / "with_prior", settings, 0.5)
    assert report["clips"] == 12 and math.isfinite(report["holdout_mse"])
    assert math.isfinite(report["holdout_track_loss"])
    loaded = load_model_folder(out)
    assert loaded.layout_prior is not None and loaded.config.layout_prior.object_slots == 2
    assert {n.split(":")[0] for n in loaded.config.layout_prior.object_labels} == {"colour", "shape"}
    assert 0.0 <= report["holdout_objects_labelled_right"] <= 1.0
    assert loaded.config.sampling.layout_prior_strength == 0.5
    assert loaded.config.layout_prior.num_frames == loaded.config.keyframe_unet.num_frames

    pipe = TextToVideoPipeline.from_pretrained(out, device="cpu", dtype="float32")
    kwargs = dict(fps="low", num_inference_steps=4, seed=3, output_type="np", progress=False)
    from_layout = pipe("a red circle moving right on a gray background", **kwargs)
    assert from_layout.settings.layout_prior_strength == 0.5
    from_noise = pipe("a red circle moving right on a gray background", layout_prior_strength=1.0, **kwargs)
    assert from_layout.frames.shape == from_noise.frames.shape
    assert not (from_layout.frames == from_noise.frames).all()
    with pytest.raises(ValueError, match="layout_prior_strength"):
        pipe("a red circle", layout_prior_strength=0.0, **kwargs)


@pytest.mark.slow
def test_strength_steers_keyframes_toward_the_layout(tiny_model_dir: Path) -> None:
    from fusionframes.diffusion.sampling import denoise_steps
    from fusionframes.pipelines.stages import KeyframeConditioning, Start, TextBranches, generate_keyframes

    components = load_model_folder(tiny_model_dir)
    unet = components.keyframe_unet
    context = torch.randn(1, 5, unet.config.context_dim)
    mask = torch.ones(1, 5)
    layout = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(5)) * 2.0
    param = Parameterisation(TrainedWith(thresholding=None))
    cond = KeyframeConditioning(TextBranches(context, mask, torch.zeros_like(context), mask), 1.0)

    def run(strength: float) -> torch.Tensor:
        return generate_keyframes(
            unet,
            param,
            cond,
            (4, 4, 16, 16),
            param.schedule(10, denoise_steps(strength, 10)),
            torch.Generator().manual_seed(0),
            start=Start(init=layout),
        )

    def corr(a: torch.Tensor) -> float:
        return torch.corrcoef(torch.stack([a.flatten(), layout.flatten()]))[0, 1].item()

    assert corr(run(0.2)) > 0.8
    assert corr(run(0.2)) > corr(run(1.0)) + 0.3


def test_folder_with_mismatched_prior_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    components = load_model_folder(tiny_model_dir)
    components.layout_prior = LayoutPrior(LayoutPriorConfig(context_dim=16, num_frames=4))
    with pytest.raises(ValueError, match="layout_prior"):
        write_model_folder(components, tmp_path / "bad")


def test_cli_names_bad_arguments(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    missing = ["layout-prior", "--model", str(tiny_model_dir), "--data", str(tmp_path / "none"), "--out", "x"]
    assert main(missing) == 2
    assert "data: not found" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    code = main(
        [
            "layout-prior",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "o"),
            "--strength",
            "1.5",
        ]
    )
    assert code == 2
    assert "strength: must be in (0, 1]" in capsys.readouterr().err
    base = [
        "layout-prior",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(tmp_path / "d"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*base, "--object-labels", "colour,shape"]) == 2
    assert "object_label_keys: label objects only with object_slots >= 1" in capsys.readouterr().err


def test_replacing_a_prior_keeps_the_parameter_count(
    tiny_model_dir: Path, tiny_shards: Path, tmp_path: Path
) -> None:
    import json

    base = tmp_path / "counted"
    components = load_model_folder(tiny_model_dir)
    write_model_folder(components, base, metadata={"parameters": 1000})
    settings = PriorTraining(steps=2, batch_size=4, hidden_dim=8, channels=(8, 8), holdout=0)
    once, _ = add_layout_prior(base, tiny_shards, tmp_path / "once", settings, 0.5)
    twice, _ = add_layout_prior(once, tiny_shards, tmp_path / "twice", settings, 0.5)
    prior_size = sum(p.numel() for p in load_model_folder(once).layout_prior.parameters())
    counts = [json.loads((path / "model_index.json").read_text())["parameters"] for path in (once, twice)]
    assert counts == [1000 + prior_size, 1000 + prior_size]


def test_data_without_tracks_is_refused_before_encoding(
    tiny_model_dir: Path, tiny_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fusionframes.layout_prior.fitting as fitting

    read = fitting.read_clips

    def untracked(*args, **kwargs) -> list[dict]:  # the clips of a data set with captions only
        return [{**clip, "meta": {"key": f"clip{i}"}} for i, clip in enumerate(read(*args, **kwargs))]

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoding started before the tracks were checked")

    monkeypatch.setattr(fitting, "read_clips", untracked)
    monkeypatch.setattr(fitting, "keyframe_latents", no_encoding)
    settings = PriorTraining(steps=2, batch_size=4, hidden_dim=8, channels=(8, 8), object_slots=2)
    with pytest.raises(ValueError, match=r"clip 0 \(clip0\) has no object tracks; object_slots"):
        add_layout_prior(tiny_model_dir, tiny_shards, tmp_path / "out", settings)
