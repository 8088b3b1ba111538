"""How a network was trained, turned into what a sampler needs: a denoiser, a schedule and noise.

One parameterisation object per network (k-diffusion's split): the sampler sees only
``denoise(x, index) -> x0``; what the network outputs (epsilon, v or x0 itself), how x0 is thresholded,
which timestep the network is told and whether the terminal step runs live here and in the schedule
this object builds. Two families:

- :class:`Parameterisation` for the 1.0-style networks (:class:`~fusionframes.config.TrainedWith`,
  stored in each U-Net folder's ``config.json``): the official cosine schedule resampled to the step
  count, or a diffusers solver (DDIM, DPM-Solver++(2M), UniPC) configured to the same training.
- :class:`ScheduledParameterisation` for Kandinsky Video 1.1's networks
  (:class:`~fusionframes.diffusion.scheduled_ddpm.DDPMSettings`): diffusers' DDPM schedule with zero
  terminal SNR betas, timestep spacing and dynamic thresholding capped at 1.

Both run the same ancestral loop (:func:`fusionframes.diffusion.sampling.sample_ddpm`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fusionframes.config import TrainedWith
from fusionframes.diffusion.guidance import Model
from fusionframes.diffusion.sampling import AncestralSchedule, CosineSteps, cosine_steps, predict_x0
from fusionframes.diffusion.scheduled_ddpm import DDPMSettings, ScheduledSteps
from fusionframes.diffusion.solvers import SolverSteps, check_clamp_support


def threshold_x0(x0: torch.Tensor, percentile: float | None) -> torch.Tensor:
    """1.0's x0 thresholding. ``percentile`` below 1: the official dynamic thresholding (clip to the
    per-sample quantile of |x0|, at least 1, and rescale to [-1, 1]); 1 or more: a static clamp to
    +-percentile (for models whose latents are not bounded by 1); None: x0 as it is.
    """
    if percentile is None:
        return x0
    if percentile >= 1.0:
        return x0.clamp(-percentile, percentile)
    flat = x0.reshape(x0.shape[0], -1).abs()
    limit = torch.quantile(flat, percentile, dim=-1).clamp(min=1.0)
    limit = limit.reshape(-1, *([1] * (x0.ndim - 1)))
    return x0.clamp(-limit, limit) / limit


class Denoiser:
    """``denoise(x, index) -> x0`` over a guided ``model(x, network_time) -> output``.

    ``model`` is kept (``self.model``) for the solvers that convert the raw output themselves.
    """

    def __init__(
        self,
        model: Model,
        schedule: AncestralSchedule,
        prediction: str,
        threshold: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.model = model
        self.schedule = schedule
        self.prediction = prediction
        self.threshold = threshold

    def __call__(self, x: torch.Tensor, index: int) -> torch.Tensor:
        output = self.model(x, self.schedule.network_time(index, x.shape[0], x.device)).float()
        sqrt_alpha, sqrt_sigma = self.schedule.alpha_terms(index, x)
        return self.threshold(predict_x0(self.prediction, x.float(), output, sqrt_alpha, sqrt_sigma))


class Anchored:
    """A denoiser whose first row is pinned to a clean ``anchor`` latent (movie scenes that continue).

    Before every network call the first row is replaced by the anchor noised to that step's level
    (fresh noise from ``generator``), so the network sees a consistent clip and the other rows follow
    the anchor; :meth:`finish` puts the anchor itself in the sampled result.
    """

    def __init__(self, denoise: Denoiser, anchor: torch.Tensor, generator: torch.Generator | None) -> None:
        self.denoise = denoise
        self.anchor = anchor.float()
        self.generator = generator

    def __call__(self, x: torch.Tensor, index: int) -> torch.Tensor:
        from fusionframes.diffusion.sampling import randn

        x = x.clone()
        noise = randn(tuple(self.anchor.shape), self.generator, x.device)
        x[:1] = self.denoise.schedule.add_noise_at(self.anchor, noise, index)
        return self.denoise(x, index)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:1] = self.anchor
        return x


@dataclass(frozen=True)
class Parameterisation:
    """A 1.0-style network's :class:`TrainedWith` as a schedule, a denoiser and a finishing step."""

    trained: TrainedWith

    def schedule(
        self, steps: int, run: int | None = None, scheduler: str = "ddpm"
    ) -> CosineSteps | SolverSteps:
        """The steps a sampler walks: the last ``run`` (default all) of ``steps``, for ``scheduler``
        (``ddpm``: the official ancestral one; else a diffusers solver, :mod:`.solvers`)."""
        t = self.trained
        if run is not None and not 1 <= run <= steps:
            raise ValueError(f"steps: a run of {run} of {steps} steps is not possible")
        if scheduler == "ddpm":
            return cosine_steps(steps, run, t.skip_terminal_step, t.matched_timesteps, t.frame_noise_sharing)
        check_clamp_support(scheduler, t.thresholding)
        return SolverSteps(
            scheduler,
            t.prediction,
            t.thresholding,
            steps,
            steps - (steps if run is None else run),
            t.skip_terminal_step,
            t.frame_noise_sharing,
        )

    def frame_schedule(self, steps: int) -> CosineSteps:
        """Single frames from pure noise (the keyframe U-Net's image mode): every row is its own
        one-frame video, so no noise is shared between rows."""
        t = self.trained
        return cosine_steps(steps, None, t.skip_terminal_step, t.matched_timesteps)

    def image_schedule(self, steps: int, run: int) -> CosineSteps:
        """Redraws of single frames (img2img) walk the last ``run`` steps of the plain ``steps``-step
        cosine schedule: they start from a finished picture, never from pure noise, so the terminal
        step is not skipped (a full-strength redraw runs it, as animation always has)."""
        return cosine_steps(steps, run, False, self.trained.matched_timesteps)

    def denoiser(self, model: Model, schedule: AncestralSchedule) -> Denoiser:
        percentile = self.trained.thresholding
        return Denoiser(model, schedule, self.trained.prediction, lambda x0: threshold_x0(x0, percentile))

    def finish(self, sample: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The sampled result as latents: a residual network (``interpolation_residual``) sampled the
        difference from ``base`` (the neighbours' blend), which is added back."""
        return sample + base if self.trained.interpolation_residual else sample


PREDICTIONS_11 = {"epsilon": "epsilon", "v_prediction": "v", "sample": "sample"}


@dataclass(frozen=True)
class ScheduledParameterisation:
    """A 1.1 network's :class:`DDPMSettings` as a schedule and a denoiser (told the timestep itself)."""

    settings: DDPMSettings

    def schedule(self, steps: int | None = None) -> ScheduledSteps:
        return self.settings.schedule(steps)

    def denoiser(self, model: Model, schedule: AncestralSchedule) -> Denoiser:
        return Denoiser(
            model, schedule, PREDICTIONS_11[self.settings.prediction_type], self.settings.threshold
        )

    def finish(self, sample: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return sample


AnyParameterisation = Parameterisation | ScheduledParameterisation
