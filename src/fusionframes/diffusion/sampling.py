"""Samplers. Each is a small function over a denoiser ``f(x, model_time) -> model output``.

``model_time`` is what the network sees: the step index times ``1000 // steps`` for the official
DDPM, so networks always work on the 0..1000 range whatever the number of steps.

``prediction`` says what the network outputs: ``"epsilon"`` (keyframes), ``"v"`` (interpolation) or
``"sample"`` (x0 itself; interpolation models with ``interpolation_prediction: sample``).
All arithmetic here is float32 whatever the network's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from fusionframes.diffusion.guidance import Denoiser
from fusionframes.diffusion.schedule import DiffusionSchedule

StepCallback = Callable[[int, int], None]
NoiseFn = Callable[[tuple[int, ...]], torch.Tensor]


def predict_x0(
    schedule: DiffusionSchedule, x: torch.Tensor, t: torch.Tensor, output: torch.Tensor, prediction: str
) -> torch.Tensor:
    a = schedule.at("sqrt_alphas_cumprod", t, x.ndim)
    s = schedule.at("sqrt_one_minus_alphas_cumprod", t, x.ndim)
    if prediction == "v":
        return a * x - s * output
    if prediction == "epsilon":
        return (x - s * output) / a
    if prediction == "sample":
        return output
    raise ValueError(f"prediction: unknown {prediction!r}; allowed: 'epsilon', 'v', 'sample'")


def threshold_x0(x0: torch.Tensor, percentile: float | None) -> torch.Tensor:
    """x0 thresholding. ``percentile`` below 1: the official dynamic thresholding (clip to the per-sample
    quantile of |x0|, at least 1, and rescale to [-1, 1]); 1 or more: a static clamp to +-percentile
    (for models whose latents are not bounded by 1); None: x0 as it is.
    """
    if percentile is None:
        return x0
    if percentile >= 1.0:
        return x0.clamp(-percentile, percentile)
    flat = x0.reshape(x0.shape[0], -1).abs()
    limit = torch.quantile(flat, percentile, dim=-1).clamp(min=1.0)
    limit = limit.reshape(-1, *([1] * (x0.ndim - 1)))
    return x0.clamp(-limit, limit) / limit


def posterior(
    schedule: DiffusionSchedule, x: torch.Tensor, t: torch.Tensor, x0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of q(x_{t-1} | x_t, x_0)."""
    mean = (
        schedule.at("posterior_mean_coef1", t, x.ndim) * x0
        + schedule.at("posterior_mean_coef2", t, x.ndim) * x
    )
    return mean, schedule.at("posterior_log_variance", t, x.ndim)


def ddpm_mean_variance(
    schedule: DiffusionSchedule,
    denoise: Denoiser,
    x: torch.Tensor,
    t: torch.Tensor,
    prediction: str,
    percentile: float | None = 0.98,
    matched_time: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """p(x_{t-1} | x_t): the official ancestral step's mean and log-variance (``matched_time``: see
    :meth:`DiffusionSchedule.network_time`)."""
    output = denoise(x, schedule.network_time(t, matched_time)).float()
    x0 = threshold_x0(predict_x0(schedule, x.float(), t, output, prediction), percentile)
    return posterior(schedule, x.float(), t, x0)


def randn(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """Gaussian noise drawn on the generator's device, so a seed gives the same noise on any target."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=torch.float32).to(device)


def video_noise(
    shape: tuple[int, ...],
    sharing: float,
    generator: torch.Generator | None,
    device: torch.device | str,
) -> torch.Tensor:
    """Unit Gaussian noise for the N frames of one video ``[N, ...]`` whose frames share ``sharing`` of
    their variance (the "mixed" noise prior of PYoCo, Ge et al. 2023). Frames of a video look alike, so
    starting them from alike noise keeps what they share (background, objects) consistent even where the
    temporal layers are weak. ``sharing`` 0 is plain independent noise, drawn exactly as :func:`randn`.
    """
    if not 0.0 <= sharing < 1.0:
        raise ValueError(f"frame_noise_sharing: must be in [0, 1), got {sharing}")
    independent = randn(shape, generator, device)
    if sharing == 0.0:
        return independent
    return mix_shared_noise(independent, randn((1, *shape[1:]), generator, device), sharing)


def mix_shared_noise(independent: torch.Tensor, common: torch.Tensor, sharing: float) -> torch.Tensor:
    """Unit-variance mix: ``common`` (broadcast over the frame axis) carries ``sharing`` of the variance."""
    return math.sqrt(sharing) * common + math.sqrt(1.0 - sharing) * independent


def start_step(num_steps: int, skip_terminal: bool) -> int:
    """The step index an ancestral sampler starts from (the second-to-last with ``skip_terminal``)."""
    return num_steps - 2 if skip_terminal and num_steps > 1 else num_steps - 1


def check_skip_steps(skip_steps: int, total: int) -> int:
    """``skip_steps`` leaves at least one of ``total`` steps to run."""
    if isinstance(skip_steps, bool) or not isinstance(skip_steps, int) or not 0 <= skip_steps < total:
        raise ValueError(f"skip_steps: must be an integer in [0, {total - 1}], got {skip_steps!r}")
    return skip_steps


def sample_ddpm(
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
    matched_time: bool = False,
    init_sample: torch.Tensor | None = None,
    skip_steps: int = 0,
) -> torch.Tensor:
    """The official sampler: ancestral DDPM over every step of the schedule, last to first.

    ``noise(shape)`` draws each step's fresh noise (default: independent, from ``generator``); a model
    trained on frame-correlated noise gets the same correlation here. ``skip_terminal``: start from
    ``x`` at the second-to-last step (see :func:`terminal_skipped`); ``matched_time``: tell the network
    the training step of each step's actual noise level (:meth:`DiffusionSchedule.network_time`).
    ``init_sample`` and ``skip_steps``: leave out the first ``skip_steps`` steps and start from
    ``init_sample`` noised with ``x`` to the level of the first step that runs (an img2img start).
    """
    steps = schedule.num_steps
    first = start_step(steps, skip_terminal)
    if init_sample is not None:
        first = first - check_skip_steps(skip_steps, first + 1)
        t_first = torch.full((x.shape[0],), first, dtype=torch.long, device=x.device)
        x = schedule.add_noise(init_sample.float(), x.float(), t_first)
    for i, step in enumerate(tqdm(range(first, -1, -1), desc=desc, disable=disable, leave=False)):
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        mean, log_var = ddpm_mean_variance(schedule, denoise, x, t, prediction, percentile, matched_time)
        if step > 0:
            fresh = noise(tuple(x.shape)) if noise is not None else randn(tuple(x.shape), generator, x.device)
            x = mean + torch.exp(0.5 * log_var) * fresh
        else:
            x = mean
        if callback is not None:
            callback(i + 1, first + 1)
    return x


def terminal_skipped(steps: int) -> DiffusionSchedule:
    """A cosine schedule one step longer than ``steps``, for sampling with ``skip_terminal``.

    At the cosine schedule's last step alpha_bar is ~1e-5, so an epsilon model's x0 estimate
    (x - sqrt(1 - a) eps) / sqrt(a) multiplies any error in eps by ~300. The released model hides this
    behind dynamic thresholding; without it, that first step fixes the video's colours wrongly and for
    good. Starting from pure noise one step lower avoids it and still makes ``steps`` network calls.
    """
    return DiffusionSchedule.cosine(steps + 1)
