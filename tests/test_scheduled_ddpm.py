"""The restated DDPM step against diffusers' own ``DDPMScheduler.step``, and branch guidance."""

from __future__ import annotations

import pytest
import torch

from fusionframes.diffusion.guidance import BranchWeights, cond_uncond, guided, text_image
from fusionframes.diffusion.parameterisation import ScheduledParameterisation
from fusionframes.diffusion.sampling import sample_ddpm
from fusionframes.diffusion.scheduled_ddpm import DDPMSettings


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("max_value", [1.0, 1.5])
def test_step_matches_diffusers(prediction: str, spacing: str, max_value: float) -> None:
    settings = DDPMSettings(
        num_inference_timesteps=7,
        prediction_type=prediction,
        timestep_spacing=spacing,
        sample_max_value=max_value,
    )
    scheduler, schedule = settings.scheduler(), settings.schedule()
    assert torch.equal(scheduler.timesteps, schedule.timesteps)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6) * 1.5
    for index, t in enumerate(scheduler.timesteps):
        output = torch.randn_like(x)
        generator = torch.Generator().manual_seed(index)
        want = scheduler.step(output, t, x, generator=generator)
        generator = torch.Generator().manual_seed(index)
        noise = torch.randn(x.shape, generator=generator) if schedule.draws_noise(index) else None
        prev, x0 = schedule.reference_step(index, x, output, noise)
        if prediction == "epsilon" and int(t) == 999:
            continue  # zero terminal SNR: x0 is inf - inf there, in diffusers as here
        torch.testing.assert_close(x0, want.pred_original_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(prev, want.prev_sample, rtol=1e-5, atol=1e-5)
        x = prev


def test_loop_is_reproducible_and_draws_per_step() -> None:
    schedule = DDPMSettings(num_inference_timesteps=5).schedule()
    calls: list[torch.Tensor] = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(t.clone())
        return 0.1 * x

    x = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    param = ScheduledParameterisation(schedule.settings)

    def run(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return sample_ddpm(param.denoiser(denoise, schedule), x, schedule, generator)

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert [int(t[0]) for t in calls[:5]] == [800, 600, 400, 200, 0]
    assert calls[0].dtype == torch.int64 and calls[0].shape == (3,)


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="prediction_type"):
        DDPMSettings(prediction_type="x0")
    with pytest.raises(ValueError, match="timestep_spacing"):
        DDPMSettings(timestep_spacing="karras")
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDPMSettings().schedule(0)
    with pytest.raises(ValueError, match="unknown key"):
        DDPMSettings.from_dict({"_type": "ddpm", "beta_start": 0.1})
    with pytest.raises(ValueError, match="_type"):
        DDPMSettings.from_dict({"_type": "ddim"})


def test_branch_weights() -> None:
    c, i, u = torch.full((2, 3), 3.0), torch.full((2, 3), 2.0), torch.full((2, 3), 1.0)
    torch.testing.assert_close(cond_uncond(4.0).combine(torch.cat([c, u])), 5 * c - 4 * u)
    torch.testing.assert_close(text_image(5.0, 2.0).combine(torch.cat([c, i, u])), -u - 3 * i + 5 * c)
    # no guidance at all: weight 0 is the conditional branch; image weight 1 and prompt weight 1 likewise
    torch.testing.assert_close(cond_uncond(0.0).combine(torch.cat([c, u])), c)
    torch.testing.assert_close(text_image(1.0, 1.0).combine(torch.cat([c, i, u])), c)
    with pytest.raises(ValueError, match="finite"):
        BranchWeights((1.0, float("nan")))


def test_guided_model_combines_one_network_pass() -> None:
    calls = []

    def run_all(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return torch.cat([x * 3.0, x * 2.0, x])

    x = torch.ones(2, 3)
    out = guided(run_all, text_image(5.0, 2.0))(x, torch.zeros(2))
    torch.testing.assert_close(out, -x - 6 * x + 15 * x)
    assert calls == [2]
    # a plain number is the two-branch weight, exactly (w + 1) * cond - w * uncond
    two = guided(lambda x, t: torch.cat([x * 3.0, x]), 4.0)(x, torch.zeros(2))
    assert torch.equal(two, 5.0 * (x * 3.0) - 4.0 * x)
