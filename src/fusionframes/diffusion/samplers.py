"""The sampler registry: the official ancestral DDPM plus fast multistep solvers from diffusers.

Every sampler has the signature of :func:`fusionframes.diffusion.sampling.sample_ddpm`. The diffusers
schedulers are configured to the models' training schedule (1000-step cosine, i.e. diffusers'
``squaredcos_cap_v2``), their prediction type (epsilon or v) and the official dynamic thresholding
(per-sample 0.98 quantile of |x0|, at least 1, no upper cap), so they drive the same networks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from fusionframes.diffusion.guidance import Denoiser
from fusionframes.diffusion.sampling import NoiseFn, StepCallback, check_skip_steps, sample_ddpm, start_step
from fusionframes.diffusion.schedule import DiffusionSchedule

TRAIN_STEPS = 1000


CLAMPING_SAMPLERS = ("ddpm", "ddim")  # the samplers that can clamp x0 to a static range


def check_clamp_support(name: str, thresholding: float | None) -> None:
    """A static x0 clamp (``thresholding >= 1``) only works with the samplers that implement one."""
    if thresholding is not None and thresholding >= 1.0 and name not in CLAMPING_SAMPLERS:
        raise ValueError(
            f"scheduler: {name!r} cannot clamp x0 to +-{thresholding:g} as this model needs; "
            f"allowed: {', '.join(CLAMPING_SAMPLERS)}"
        )


def _diffusers_scheduler(name: str, prediction: str, percentile: float | None, spacing: str = "trailing"):
    import diffusers

    static = percentile is not None and percentile >= 1.0  # a static clamp of x0 to +-percentile
    common: dict[str, Any] = {
        "num_train_timesteps": TRAIN_STEPS,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": {"epsilon": "epsilon", "v": "v_prediction", "sample": "sample"}[prediction],
        "thresholding": percentile is not None and not static,
        "dynamic_thresholding_ratio": percentile if percentile is not None and not static else 0.995,
        "sample_max_value": float("inf"),
        "timestep_spacing": spacing,
    }
    if name == "ddim":
        clip = {"clip_sample": True, "clip_sample_range": percentile} if static else {"clip_sample": False}
        return diffusers.DDIMScheduler(**common, **clip, set_alpha_to_one=True)
    check_clamp_support(name, percentile)
    if name == "dpm++2m":
        return diffusers.DPMSolverMultistepScheduler(
            **common,
            algorithm_type="dpmsolver++",
            solver_order=2,
            lower_order_final=True,
            lambda_min_clipped=-5.1,
        )
    if name == "unipc":
        return diffusers.UniPCMultistepScheduler(**common, solver_order=2, lower_order_final=True)
    raise ValueError(f"scheduler: unknown {name!r}; allowed: {', '.join(SAMPLERS)}")


def diffusers_sampler(name: str) -> Callable[..., torch.Tensor]:
    """Wrap a diffusers scheduler as a sampler over our denoiser; ``schedule.num_steps`` sets the steps."""

    def sample(
        denoise: Denoiser,
        x: torch.Tensor,
        schedule: DiffusionSchedule,
        prediction: str,
        generator: torch.Generator | None = None,
        percentile: float | None = 0.98,
        callback: StepCallback | None = None,
        desc: str = "denoising",
        disable: bool = False,
        noise: NoiseFn | None = None,
        skip_terminal: bool = False,
        matched_time: bool = True,
        init_sample: torch.Tensor | None = None,
        skip_steps: int = 0,
    ) -> torch.Tensor:
        # ``matched_time`` is always true here (diffusers passes the training timestep of each step's
        # noise level). ``noise`` is unused: these solvers are deterministic after the initial noise. With
        # ``skip_terminal`` the schedule is one step longer (terminal_skipped) and "leading" spacing
        # starts below pure noise (t = 950 of 1000 for 20 steps) instead of at t = 999.
        spacing = "leading" if skip_terminal else "trailing"
        scheduler = _diffusers_scheduler(name, prediction, percentile, spacing)
        steps = start_step(schedule.num_steps, skip_terminal) + 1
        scheduler.set_timesteps(steps, device=x.device)
        import inspect

        extra = (
            {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
        )
        timesteps = scheduler.timesteps
        if init_sample is not None:  # an img2img start: noise init_sample to the first step that runs
            skip_steps = check_skip_steps(skip_steps, len(timesteps))
            timesteps = timesteps[skip_steps:]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(skip_steps)
            x = scheduler.add_noise(init_sample.float(), x.float(), timesteps[:1])
        else:
            x = x.float() * scheduler.init_noise_sigma
        steps = len(timesteps)
        for i, t in enumerate(tqdm(timesteps, desc=desc, disable=disable, leave=False)):
            model_input = scheduler.scale_model_input(x, t)
            time = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
            output = denoise(model_input, time).float()
            x = scheduler.step(output, t, x, **extra).prev_sample
            if callback is not None:
                callback(i + 1, steps)
        return x

    sample.__name__ = f"sample_{name.replace('+', 'p')}"
    return sample


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": diffusers_sampler("ddim"),
    "dpm++2m": diffusers_sampler("dpm++2m"),
    "unipc": diffusers_sampler("unipc"),
}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    if name not in SAMPLERS:
        raise ValueError(f"scheduler: unknown {name!r}; allowed: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
