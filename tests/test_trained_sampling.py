"""How each network was trained (its ``trained_with``) and the sampling that follows from it:
frame-shared keyframe noise, residual interpolation, the skipped terminal step, matched timesteps.
All are off for the released model, so its output must not change."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fusionframes import TextToVideoPipeline
from fusionframes.config import ModelConfig, TrainedWith, UNetConfig, small_config
from fusionframes.diffusion.parameterisation import Parameterisation
from fusionframes.diffusion.samplers import SAMPLERS, run_sampler
from fusionframes.diffusion.sampling import CosineSteps, cosine_steps, randn, sample_ddpm, video_noise
from fusionframes.diffusion.schedule import DiffusionSchedule
from fusionframes.pipelines.stages import InterpolationConditioning, blend_neighbours, interpolate_pass

FAST = {"num_inference_steps": 3, "interpolation_steps": 2, "progress": False, "output_type": "pt"}


def test_unshared_video_noise_is_plain_noise() -> None:
    a = video_noise((4, 2, 3, 3), 0.0, torch.Generator().manual_seed(5), "cpu")
    b = randn((4, 2, 3, 3), torch.Generator().manual_seed(5), "cpu")
    assert torch.equal(a, b)


def test_shared_video_noise_has_unit_variance_and_the_asked_correlation() -> None:
    noise = video_noise((2, 20_000), 0.8, torch.Generator().manual_seed(0), "cpu")
    assert noise.var(dim=1).sub(1.0).abs().max() < 0.05
    correlation = torch.corrcoef(noise)[0, 1]
    assert abs(float(correlation) - 0.8) < 0.03


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2.0])
def test_bad_noise_sharing_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="frame_noise_sharing: must be in \\[0, 1\\)"):
        video_noise((2, 3), bad, None, "cpu")
    with pytest.raises(ValueError, match="frame_noise_sharing"):
        TrainedWith(frame_noise_sharing=bad)


def test_trained_with_is_checked_per_network() -> None:
    with pytest.raises(ValueError, match="TrainedWith.prediction: unknown 'x0'"):
        TrainedWith(prediction="x0")
    with pytest.raises(ValueError, match="interpolation_residual: only for an interpolation U-Net"):
        UNetConfig(num_frames=8, trained_with=TrainedWith(interpolation_residual=True))
    with pytest.raises(ValueError, match="skip_terminal_step: only for a keyframe U-Net"):
        UNetConfig(interpolation=True, trained_with=TrainedWith(prediction="v", skip_terminal_step=True))
    # the release defaults differ by network
    assert UNetConfig(num_frames=8).training.prediction == "epsilon"
    assert UNetConfig(interpolation=True).training.prediction == "v"


def test_legacy_root_sampling_block_moves_into_each_unet() -> None:
    """Folders written before TrainedWith kept these fields in the root config's sampling block."""
    data = small_config().to_dict()
    for name in ("keyframe_unet", "interpolation_unet"):
        del data[name]["trained_with"]
    data["sampling"].update(
        thresholding=3.5,
        frame_noise_sharing=0.8,
        skip_terminal_step=True,
        matched_timesteps=True,
        interpolation_residual=True,
        interpolation_prediction="sample",
        keyframe_prediction="epsilon",
    )
    config = ModelConfig.from_dict(data)
    assert config.keyframe_unet.training == TrainedWith(
        thresholding=3.5, frame_noise_sharing=0.8, skip_terminal_step=True, matched_timesteps=True
    )
    assert config.interpolation_unet.training == TrainedWith(
        prediction="sample", thresholding=3.5, matched_timesteps=True, interpolation_residual=True
    )
    data["keyframe_unet"]["trained_with"] = TrainedWith(thresholding=2.0).to_dict()
    with pytest.raises(ValueError, match="keyframe_unet: trained_with.thresholding is 2.0 but the root"):
        ModelConfig.from_dict(data)


def test_ddpm_draws_its_step_noise_from_the_schedule() -> None:
    shapes = []

    class Counting(CosineSteps):
        def noise(self, shape, generator, device):
            shapes.append(shape)
            return torch.zeros(shape)

    schedule = Counting(DiffusionSchedule.cosine(4), 3)
    sample_ddpm(lambda x, i: torch.zeros_like(x), torch.randn(3, 2, 4, 4), schedule)
    assert shapes == [(3, 2, 4, 4)] * 3  # every step but the last adds noise


def test_residual_interpolation_adds_the_neighbour_blend() -> None:
    """A residual model whose x0 is zero leaves exactly the linear blend between neighbours."""
    frames = torch.randn(3, 2, 4, 4)

    class Zero(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unused = torch.nn.Linear(1, 1)

        def forward(self, rows: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            return torch.zeros(rows.shape[0], 6, *rows.shape[2:])

    def run(residual: bool) -> torch.Tensor:
        param = Parameterisation(TrainedWith(prediction="sample", interpolation_residual=residual))
        cond = InterpolationConditioning(torch.zeros(4), 0.0)
        return interpolate_pass(Zero(), param, cond, frames, 1, param.schedule(2))

    out = run(residual=True)
    assert out.shape == (9, 2, 4, 4)
    torch.testing.assert_close(out[::4], frames)
    torch.testing.assert_close(out[2], (frames[0] + frames[1]) / 2)
    torch.testing.assert_close(out[5], 0.75 * frames[1] + 0.25 * frames[2])
    torch.testing.assert_close(blend_neighbours(frames[:1], frames[1:2])[:, :2], out[1:2])
    plain = run(residual=False)
    assert torch.equal(plain[1:4], torch.zeros(3, 2, 4, 4))


def _with_training(pipe: TextToVideoPipeline, network: str, **changes) -> TextToVideoPipeline:
    unet = getattr(pipe.config, network)
    trained = dataclasses.replace(unet.training, **changes)
    pipe.config = dataclasses.replace(
        pipe.config, **{network: dataclasses.replace(unet, trained_with=trained)}
    )
    return pipe


@pytest.mark.slow
def test_pipeline_follows_the_model_folder_settings(tiny_model_dir) -> None:
    def make() -> TextToVideoPipeline:
        return TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")

    plain = make()
    assert plain.config.keyframe_unet.training.frame_noise_sharing == 0.0
    assert plain.config.interpolation_unet.training.interpolation_residual is False
    base = plain("a red star", seed=2, fps="medium", **FAST).frames
    again = plain("a red star", seed=2, fps="medium", **FAST).frames
    assert torch.equal(base, again)

    shared = _with_training(make(), "keyframe_unet", frame_noise_sharing=0.9)
    shared_frames = shared("a red star", seed=2, fps="low", **FAST).frames
    unshared = plain("a red star", seed=2, fps="low", **FAST).frames
    # alike noise makes alike keyframes: frames differ less from each other than with independent noise
    spread = lambda video: (video - video.mean(0, keepdim=True)).abs().mean()  # noqa: E731
    assert spread(shared_frames) < spread(unshared)

    residual = _with_training(make(), "interpolation_unet", interpolation_residual=True)
    residual_frames = residual("a red star", seed=2, fps="medium", **FAST).frames
    torch.testing.assert_close(residual_frames[::4], base[::4])  # same keyframes
    assert (residual_frames[1::4] - base[1::4]).abs().max() > 1e-3  # other in-betweens


def test_skipping_the_terminal_step_starts_where_x0_estimates_are_usable() -> None:
    """At the last cosine step sqrt(alpha_bar) ~ 3e-3: an eps error of 0.02 is an x0 error of ~8, which the
    first DDPM step writes into the sample; one step lower it is ~0.3. Same number of network calls."""
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    error = torch.full_like(x, 0.02)

    def x0_error(schedule: CosineSteps) -> float:
        param = Parameterisation(TrainedWith(thresholding=None))
        denoise = param.denoiser(lambda x, t: error, schedule)
        exact = param.denoiser(lambda x, t: 0 * error, schedule)
        return float((denoise(x, 0) - exact(x, 0)).abs().mean())

    plain, skipped = cosine_steps(20), cosine_steps(20, skip_terminal=True)
    assert x0_error(plain) > 5 and x0_error(skipped) < 0.5

    calls = []

    def counting(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        calls.append(int(time[0]))
        return torch.zeros_like(x)

    param = Parameterisation(TrainedWith(thresholding=None, skip_terminal_step=True))
    schedule = param.schedule(20)
    sample_ddpm(param.denoiser(counting, schedule), x, schedule)
    assert len(calls) == 20 and calls[0] == 19 * schedule.schedule.time_scale and calls[-1] == 0


def test_diffusers_samplers_start_below_pure_noise_when_skipping() -> None:
    seen = []

    def model(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        seen.append(int(time[0]))
        return torch.zeros_like(x)

    x = torch.randn(1, 4, 4, 4)
    for skip, first, last in ((True, 950, 0), (False, 999, 49)):  # leading vs trailing spacing
        seen.clear()
        param = Parameterisation(TrainedWith(thresholding=None, skip_terminal_step=skip))
        schedule = param.schedule(20, scheduler="ddim")
        run_sampler(param.denoiser(model, schedule), schedule.start(x), schedule)
        assert len(seen) == 20 and seen[0] == first and seen[-1] == last


def test_pipeline_skips_the_terminal_step_when_the_model_says_so(tiny_model_dir) -> None:
    pipe = TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    base = pipe("a red star", seed=4, fps="low", **FAST).frames
    _with_training(pipe, "keyframe_unet", skip_terminal_step=True)
    steps = []
    out = pipe(
        "a red star", seed=4, fps="low", callback=lambda stage, i, n: steps.append((stage, i, n)), **FAST
    )
    assert [s for s in steps if s[0] == "keyframes"][-1] == ("keyframes", 3, 3)
    assert torch.isfinite(out.frames).all() and (out.frames - base).abs().max() > 1e-4


def test_sample_prediction_is_x0_for_every_sampler() -> None:
    """An x0 ("sample") model that always answers zero ends on zero with every sampler."""

    def zero(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    param = Parameterisation(TrainedWith(prediction="sample", thresholding=None))
    for name in SAMPLERS:
        schedule = param.schedule(5, scheduler=name)
        out = run_sampler(param.denoiser(zero, schedule), schedule.start(x), schedule)
        assert out.abs().max() < 1e-4, name


def test_matched_timesteps_tell_the_network_the_noise_level_it_is_at() -> None:
    schedule = DiffusionSchedule.cosine(20)
    steps = torch.arange(20)
    assert schedule.network_time(steps).tolist() == [50 * i for i in range(20)]  # official
    matched = schedule.network_time(steps, matched=True)
    assert matched.tolist() == [50 * i + 49 for i in range(20)]
    training = DiffusionSchedule.cosine(1000)
    # the same noise level at every step but the last, where both are the clipped ~0
    torch.testing.assert_close(
        training.alphas_cumprod[matched][:-1], schedule.alphas_cumprod[:-1], rtol=2e-3, atol=0
    )

    seen = []

    def model(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        seen.append(int(time[0]))
        return torch.zeros_like(x)

    param = Parameterisation(TrainedWith(prediction="sample", thresholding=None, matched_timesteps=True))
    steps_run = param.schedule(20)
    sample_ddpm(param.denoiser(model, steps_run), torch.randn(1, 2, 2, 2), steps_run)
    assert seen == [50 * i + 49 for i in range(19, -1, -1)]


def test_a_folder_written_before_trained_with_reads_the_same(tiny_model_dir, tmp_path) -> None:
    """The root ``sampling`` block of an older folder still holds the training fields: they load into
    each U-Net as if its own config.json held them; a U-Net that says otherwise fails, naming both."""
    import json
    import shutil

    from fusionframes.io.checkpoints import CheckpointError, read_folder_config

    folder = tmp_path / "old"
    shutil.copytree(tiny_model_dir, folder)
    changed = dataclasses.replace(
        read_folder_config(tiny_model_dir).keyframe_unet.training, thresholding=2.5, frame_noise_sharing=0.5
    )
    root = json.loads((folder / "config.json").read_text())
    root["sampling"].update(thresholding=2.5, frame_noise_sharing=0.5)
    (folder / "config.json").write_text(json.dumps(root))
    for name in ("keyframe_unet", "interpolation_unet"):
        path = folder / name / "config.json"
        data = json.loads(path.read_text())
        del data["trained_with"]
        path.write_text(json.dumps(data))
    config = read_folder_config(folder)
    assert config.keyframe_unet.training == changed
    assert config.interpolation_unet.training.thresholding == 2.5
    assert config.interpolation_unet.training.frame_noise_sharing == 0.0  # keyframes only
    data["trained_with"] = TrainedWith(prediction="v", thresholding=0.98).to_dict()
    (folder / "interpolation_unet" / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="interpolation_unet: trained_with.thresholding is 0.98"):
        read_folder_config(folder)
