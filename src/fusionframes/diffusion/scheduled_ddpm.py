"""Ancestral DDPM over a subset of the training timesteps, as diffusers' ``DDPMScheduler`` runs it.

Kandinsky Video 1.1 samples every network with a ``DDPMScheduler`` built from a handful of settings
(its ``get_sampler``): cosine betas rescaled to zero terminal SNR, "leading" or "trailing" timestep
spacing, dynamic thresholding whose scale is capped at 1 (so the predicted x0 is clipped to [-1, 1]),
``fixed_small_log`` variance, and the U-Net told the scheduler's timestep itself (0..999), not a step
index. :class:`DDPMSettings` holds those settings for one network; diffusers turns them into betas and
timesteps. The step itself is restated in :meth:`ScheduledSteps.step` so that the noise is an argument:
a sampler then draws it from its own generator, in the reference's order (only at steps whose
timestep is above 0, as diffusers does), and a parity test can feed the recorded noise. The arithmetic
is diffusers' own, term by term (``tests/test_scheduled_ddpm.py`` checks it against ``scheduler.step``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

PREDICTIONS = ("epsilon", "v_prediction", "sample")
SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class DDPMSettings:
    """How one network was trained to be sampled, in diffusers' ``DDPMScheduler`` terms.

    The defaults are the 1.1 keyframe (and first-frame) sampler; :func:`interpolation_settings_11` is
    the interpolation one. Field names are the reference's ``get_sampler`` arguments, so its config
    blocks load with :meth:`from_dict`.
    """

    num_inference_timesteps: int = 50
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    rescale_betas_zero_snr: bool = True
    prediction_type: str = "epsilon"
    timestep_spacing: str = "leading"
    thresholding: bool = True
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0  # diffusers' default: the thresholding scale never exceeds 1
    variance_type: str = "fixed_small_log"

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTIONS:
            raise ValueError(
                f"prediction_type: unknown {self.prediction_type!r}; allowed: {', '.join(PREDICTIONS)}"
            )
        if self.timestep_spacing not in SPACINGS:
            raise ValueError(
                f"timestep_spacing: unknown {self.timestep_spacing!r}; allowed: {', '.join(SPACINGS)}"
            )
        if self.variance_type != "fixed_small_log":
            raise ValueError(
                f"variance_type: only 'fixed_small_log' is supported, got {self.variance_type!r}"
            )
        check_steps(self.num_inference_timesteps, self.num_train_timesteps, "num_inference_timesteps")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DDPMSettings:
        """From the reference's sampler settings; its ``_type`` must be ``ddpm`` (the only one it has)."""
        data = dict(data)
        kind = data.pop("_type", "ddpm")
        if kind != "ddpm":
            raise ValueError(f"sampler _type: only 'ddpm' is supported, got {kind!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"DDPMSettings: unknown key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def threshold(self, x0: torch.Tensor) -> torch.Tensor:
        """diffusers' dynamic thresholding: the per-sample quantile of |x0|, held in [1, max]."""
        if not self.thresholding:
            return x0
        if self.sample_max_value <= 1.0:  # the scale is exactly 1: a plain clip
            return x0.clamp(-1.0, 1.0)
        flat = x0.reshape(x0.shape[0], -1)
        scale = torch.quantile(flat.abs(), self.dynamic_thresholding_ratio, dim=1)
        scale = scale.clamp(1.0, self.sample_max_value)[:, None]
        return (flat.clamp(-scale, scale) / scale).reshape(x0.shape)

    def scheduler(self, steps: int | None = None):
        """The diffusers scheduler these settings describe, with ``steps`` (default: the trained count)
        inference timesteps set."""
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(
            num_train_timesteps=self.num_train_timesteps,
            beta_schedule=self.beta_schedule,
            rescale_betas_zero_snr=self.rescale_betas_zero_snr,
            prediction_type=self.prediction_type,
            timestep_spacing=self.timestep_spacing,
            thresholding=self.thresholding,
            dynamic_thresholding_ratio=self.dynamic_thresholding_ratio,
            sample_max_value=self.sample_max_value,
            variance_type=self.variance_type,
        )
        scheduler.set_timesteps(self.steps_or_default(steps))
        return scheduler

    def steps_or_default(self, steps: int | None) -> int:
        if steps is None:
            return self.num_inference_timesteps
        return check_steps(steps, self.num_train_timesteps, "num_inference_steps")

    def schedule(self, steps: int | None = None) -> ScheduledSteps:
        """The timesteps a sampler visits and the cumulative alphas it needs at each."""
        scheduler = self.scheduler(steps)
        alphas_cumprod = scheduler.alphas_cumprod.float()
        timesteps = scheduler.timesteps.to(torch.int64)
        previous = torch.tensor([int(scheduler.previous_timestep(int(t))) for t in timesteps])
        prev_alphas = torch.where(
            previous >= 0, alphas_cumprod[previous.clamp(min=0)], torch.ones((), dtype=alphas_cumprod.dtype)
        )
        return ScheduledSteps(
            settings=self,
            timesteps=timesteps,
            alphas_cumprod=alphas_cumprod,
            step_alphas=alphas_cumprod[timesteps],
            step_prev_alphas=prev_alphas,
        )


def check_steps(steps: Any, train_steps: int, name: str) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= train_steps:
        raise ValueError(f"{name}: must be an integer in [1, {train_steps}], got {steps!r}")
    return steps


def interpolation_settings_11() -> DDPMSettings:
    """The 1.1 interpolation sampler: v-prediction, 10 trailing steps (999, 899, ..., 99)."""
    return DDPMSettings(
        num_inference_timesteps=10, prediction_type="v_prediction", timestep_spacing="trailing"
    )


@dataclass(frozen=True)
class ScheduledSteps:
    """The visited timesteps (descending) with ``alpha_bar`` at each and at the one after it."""

    settings: DDPMSettings
    timesteps: torch.Tensor  # int64 [S]
    alphas_cumprod: torch.Tensor  # float32 [num_train_timesteps], the whole training schedule
    step_alphas: torch.Tensor  # float32 [S]
    step_prev_alphas: torch.Tensor  # float32 [S]; 1 after the last training step

    def __len__(self) -> int:
        return int(self.timesteps.shape[0])

    def draws_noise(self, index: int) -> bool:
        """diffusers adds noise at every step whose timestep is above 0 (with trailing spacing, the
        last step too, with a standard deviation of 1e-10)."""
        return int(self.timesteps[index]) > 0

    def network_time(self, index: int, rows: int, device: torch.device) -> torch.Tensor:
        """The scheduler's timestep itself (int64, one per row): what the 1.1 networks are told."""
        return self.timesteps[index].expand(rows).to(device)

    def alpha_terms(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.step_alphas[index].to(x.device)
        return a**0.5, (1 - a) ** 0.5

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
        return gaussian(shape, generator, device)

    def step(self, index: int, x: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """A sample of the posterior from timestep ``timesteps[index]`` given the (thresholded) ``x0``;
        ``noise`` is the unit Gaussian for this step, None where :meth:`draws_noise` is false."""
        a = self.step_alphas[index].to(x.device)
        a_prev = self.step_prev_alphas[index].to(x.device)
        beta_t = 1 - a / a_prev
        mean = (a_prev**0.5 * beta_t) / (1 - a) * x0 + (a / a_prev) ** 0.5 * (1 - a_prev) / (1 - a) * x
        if noise is None:
            if self.draws_noise(index):
                raise ValueError(f"noise: timestep {int(self.timesteps[index])} needs this step's noise")
            return mean
        variance = ((1 - a_prev) / (1 - a) * beta_t).clamp(min=1e-20)
        return mean + torch.exp(0.5 * torch.log(variance)) * noise

    def reference_step(
        self, index: int, x: torch.Tensor, output: torch.Tensor, noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``DDPMScheduler.step`` from a network ``output``: ``(x_prev, predicted x0)`` (what
        the parity tests compare against the recorded states)."""
        from fusionframes.diffusion.parameterisation import ScheduledParameterisation

        model = lambda _x, _t: output  # noqa: E731 - the output is given, not computed
        x0 = ScheduledParameterisation(self.settings).denoiser(model, self)(x, index)
        return self.step(index, x, x0, noise), x0

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
        """q(x_t | x_0) at a training timestep (diffusers' ``add_noise``)."""
        a = self.alphas_cumprod[timestep].to(device=x0.device, dtype=x0.dtype)
        return a**0.5 * x0 + (1 - a) ** 0.5 * noise

    def add_noise_at(self, x0: torch.Tensor, noise: torch.Tensor, index: int = 0) -> torch.Tensor:
        """q(x_t | x_0) at the level of step ``index``."""
        return self.add_noise(x0, noise, int(self.timesteps[index]))

    def start(self, noise: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
        """1.1 always starts from pure noise at the first timestep."""
        if init is not None:
            raise ValueError("init: the 1.1 sampler starts from noise only")
        return noise.float()


def gaussian(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """Unit Gaussian drawn on the generator's device (a CPU generator gives the same noise anywhere)."""
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=source, dtype=torch.float32).to(device)


def uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """Uniform [0, 1) noise, drawn like :func:`gaussian`."""
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=source, dtype=torch.float32).to(device)
