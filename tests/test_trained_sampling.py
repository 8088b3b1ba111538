"""Sampling settings a trained model folder carries: frame-shared keyframe noise and residual
interpolation. Both are off for the released model, so its output must not change."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fusionframes import TextToVideoPipeline
from fusionframes.config import SamplingDefaults
from fusionframes.diffusion.sampling import randn, sample_ddpm, terminal_skipped, video_noise
from fusionframes.diffusion.schedule import DiffusionSchedule
from fusionframes.pipelines.stages import blend_neighbours, interpolate_pass

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
        SamplingDefaults(frame_noise_sharing=bad)


def test_ddpm_draws_its_step_noise_from_the_given_function() -> None:
    shapes = []

    def noise(shape: tuple[int, ...]) -> torch.Tensor:
        shapes.append(shape)
        return torch.zeros(shape)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    x = torch.randn(3, 2, 4, 4)
    sample_ddpm(
        denoise, x, DiffusionSchedule.cosine(4), "epsilon", percentile=None, noise=noise, disable=True
    )
    assert shapes == [(3, 2, 4, 4)] * 3  # every step but the last adds noise


def test_residual_interpolation_adds_the_neighbour_blend() -> None:
    """A residual model that denoises to zero leaves exactly the linear blend between neighbours."""
    frames = torch.randn(3, 2, 4, 4)
    unused = torch.nn.Linear(1, 1)  # the sampler below never calls the network

    def zero_sampler(denoise, x, *args, **kwargs):
        return torch.zeros_like(x)

    def run(residual: bool) -> torch.Tensor:
        schedule = DiffusionSchedule.cosine(2)
        return interpolate_pass(
            unused,
            torch.zeros(4),
            frames,
            1,
            schedule,
            0.0,
            sampler=zero_sampler,
            residual=residual,
            progress=False,
        )

    out = run(residual=True)
    assert out.shape == (9, 2, 4, 4)
    torch.testing.assert_close(out[::4], frames)
    torch.testing.assert_close(out[2], (frames[0] + frames[1]) / 2)
    torch.testing.assert_close(out[5], 0.75 * frames[1] + 0.25 * frames[2])
    torch.testing.assert_close(blend_neighbours(frames[:1], frames[1:2])[:, :2], out[1:2])
    plain = run(residual=False)
    assert torch.equal(plain[1:4], torch.zeros(3, 2, 4, 4))


def _with_sampling(pipe: TextToVideoPipeline, **changes) -> TextToVideoPipeline:
    pipe.config = dataclasses.replace(
        pipe.config, sampling=dataclasses.replace(pipe.config.sampling, **changes)
    )
    return pipe


def test_pipeline_follows_the_model_folder_settings(tiny_model_dir) -> None:
    def make() -> TextToVideoPipeline:
        return TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")

    plain = make()
    assert plain.config.sampling.frame_noise_sharing == 0.0
    assert plain.config.sampling.interpolation_residual is False
    base = plain("a red star", seed=2, fps="medium", **FAST).frames
    again = plain("a red star", seed=2, fps="medium", **FAST).frames
    assert torch.equal(base, again)

    shared = _with_sampling(make(), frame_noise_sharing=0.9)("a red star", seed=2, fps="low", **FAST).frames
    unshared = plain("a red star", seed=2, fps="low", **FAST).frames
    # alike noise makes alike keyframes: frames differ less from each other than with independent noise
    spread = lambda video: (video - video.mean(0, keepdim=True)).abs().mean()  # noqa: E731
    assert spread(shared) < spread(unshared)

    residual = _with_sampling(make(), interpolation_residual=True)("a red star", seed=2, fps="medium", **FAST)
    torch.testing.assert_close(residual.frames[::4], base[::4])  # same keyframes
    assert (residual.frames[1::4] - base[1::4]).abs().max() > 1e-3  # other in-betweens


def test_skipping_the_terminal_step_starts_where_x0_estimates_are_usable() -> None:
    """At the last cosine step sqrt(alpha_bar) ~ 3e-3: an eps error of 0.02 is an x0 error of ~8, which the
    first DDPM step writes into the sample; one step lower it is ~0.3. Same number of network calls."""
    from fusionframes.diffusion.sampling import predict_x0

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    plain, longer = DiffusionSchedule.cosine(20), terminal_skipped(20)
    error = torch.full_like(x, 0.02)
    first_plain = torch.full((2,), 19)
    first_skipped = torch.full((2,), 19)  # the second-to-last of 21 steps
    x0_error_plain = (
        (
            predict_x0(plain, x, first_plain, error, "epsilon")
            - predict_x0(plain, x, first_plain, 0 * error, "epsilon")
        )
        .abs()
        .mean()
    )
    x0_error_skipped = (
        (
            predict_x0(longer, x, first_skipped, error, "epsilon")
            - predict_x0(longer, x, first_skipped, 0 * error, "epsilon")
        )
        .abs()
        .mean()
    )
    assert x0_error_plain > 5 and x0_error_skipped < 0.5

    calls = []

    def counting(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        calls.append(int(time[0]))
        return torch.zeros_like(x)

    sample_ddpm(counting, x, longer, "epsilon", percentile=None, skip_terminal=True, disable=True)
    assert len(calls) == 20 and calls[0] == 19 * longer.time_scale and calls[-1] == 0


def test_diffusers_samplers_start_below_pure_noise_when_skipping() -> None:
    from fusionframes.diffusion.samplers import get_sampler

    seen = []

    def denoise(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        seen.append(int(time[0]))
        return torch.zeros_like(x)

    x = torch.randn(1, 4, 4, 4)
    get_sampler("ddim")(
        denoise, x, terminal_skipped(20), "epsilon", percentile=None, skip_terminal=True, disable=True
    )
    assert len(seen) == 20 and seen[0] == 950 and seen[-1] == 0
    seen.clear()
    get_sampler("ddim")(denoise, x, DiffusionSchedule.cosine(20), "epsilon", percentile=None, disable=True)
    assert len(seen) == 20 and seen[0] == 999


def test_pipeline_skips_the_terminal_step_when_the_model_says_so(tiny_model_dir) -> None:
    pipe = TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    base = pipe("a red star", seed=4, fps="low", **FAST).frames
    _with_sampling(pipe, skip_terminal_step=True)
    steps = []
    out = pipe(
        "a red star", seed=4, fps="low", callback=lambda stage, i, n: steps.append((stage, i, n)), **FAST
    )
    assert [s for s in steps if s[0] == "keyframes"][-1] == ("keyframes", 3, 3)
    assert torch.isfinite(out.frames).all() and (out.frames - base).abs().max() > 1e-4


def test_sample_prediction_is_x0_for_every_sampler() -> None:
    """An x0 ("sample") model that always answers zero ends on zero with every sampler."""
    from fusionframes.diffusion.samplers import SAMPLERS

    def zero(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    for name, sampler in SAMPLERS.items():
        out = sampler(zero, x, DiffusionSchedule.cosine(5), "sample", percentile=None, disable=True)
        assert out.abs().max() < 1e-4, name
    with pytest.raises(ValueError, match="interpolation_prediction: unknown 'x0'"):
        SamplingDefaults(interpolation_prediction="x0")


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

    def denoise(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        seen.append(int(time[0]))
        return torch.zeros_like(x)

    sample_ddpm(
        denoise, torch.randn(1, 2, 2, 2), schedule, "sample", percentile=None, matched_time=True, disable=True
    )
    assert seen == [50 * i + 49 for i in range(19, -1, -1)]
