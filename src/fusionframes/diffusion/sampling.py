"""The one ancestral DDPM loop, the schedule it walks, and the noise it draws.

A sampler here is a small function ``sampler(denoise, x, schedule, generator, callback)``:

- ``schedule`` says which steps run, what the network is told at each, the forward-process terms and
  the posterior step (:class:`CosineSteps` for 1.0's official sampler, :class:`~fusionframes.diffusion.
  scheduled_ddpm.ScheduledSteps` for 1.1's diffusers DDPM); it also owns the noise source, so a model
  trained on frame-correlated noise gets that correlation at every step.
- ``denoise(x, index)`` returns the clean-sample estimate x0 at the schedule's step ``index``; it is a
  :class:`~fusionframes.diffusion.parameterisation.Denoiser` that hides the prediction type,
  thresholding and timestep matching of the network behind it.

All arithmetic is float32 whatever the network's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from fusionframes.diffusion.schedule import DiffusionSchedule

StepCallback = Callable[[int, int], None]
X0Denoiser = Callable[[torch.Tensor, int], torch.Tensor]


def predict_x0(
    prediction: str, x: torch.Tensor, output: torch.Tensor, sqrt_alpha: torch.Tensor, sqrt_sigma: torch.Tensor
) -> torch.Tensor:
    """x0 from a network ``output`` of kind ``prediction`` at a level with ``sqrt(alpha_bar)`` and
    ``sqrt(1 - alpha_bar)`` (tensors that broadcast over ``x``)."""
    if prediction == "v":
        return sqrt_alpha * x - sqrt_sigma * output
    if prediction == "epsilon":
        return (x - sqrt_sigma * output) / sqrt_alpha
    if prediction == "sample":
        return output
    raise ValueError(f"prediction: unknown {prediction!r}; allowed: 'epsilon', 'v', 'sample'")


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


class AncestralSchedule(Protocol):
    """What the ancestral loop needs of a schedule; ``index`` counts the steps that run, from 0."""

    def __len__(self) -> int: ...

    def network_time(self, index: int, rows: int, device: torch.device) -> torch.Tensor: ...

    def alpha_terms(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def draws_noise(self, index: int) -> bool: ...

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor: ...

    def step(
        self, index: int, x: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor: ...

    def add_noise_at(self, x0: torch.Tensor, noise: torch.Tensor, index: int = 0) -> torch.Tensor: ...

    def start(self, noise: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class CosineSteps:
    """Kandinsky Video 1.0's sampling schedule: steps ``first, first - 1, ..., 0`` of a cosine schedule.

    The networks are told ``step * 1000 // S`` (the official sampler), or with ``matched`` the training
    step of each step's actual noise level (:meth:`DiffusionSchedule.network_time`). ``sharing`` is the
    frame-noise correlation of every draw (0: independent noise).
    """

    schedule: DiffusionSchedule
    first: int
    matched: bool = False
    sharing: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.first < self.schedule.num_steps:
            raise ValueError(f"first: must be in [0, {self.schedule.num_steps - 1}], got {self.first}")

    def __len__(self) -> int:
        return self.first + 1

    def _t(self, index: int, rows: int, device: torch.device) -> torch.Tensor:
        return torch.full((rows,), self.first - index, dtype=torch.long, device=device)

    def network_time(self, index: int, rows: int, device: torch.device) -> torch.Tensor:
        return self.schedule.network_time(self._t(index, rows, device), self.matched)

    def alpha_terms(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self._t(index, x.shape[0], x.device)
        return (
            self.schedule.at("sqrt_alphas_cumprod", t, x.ndim),
            self.schedule.at("sqrt_one_minus_alphas_cumprod", t, x.ndim),
        )

    def draws_noise(self, index: int) -> bool:
        return self.first - index > 0

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
        return video_noise(shape, self.sharing, generator, device)

    def log_variance(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.schedule.at("posterior_log_variance", self._t(index, x.shape[0], x.device), x.ndim)

    def step(self, index: int, x: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """A sample of q(x_{t-1} | x_t, x0) (its mean where ``noise`` is None)."""
        t = self._t(index, x.shape[0], x.device)
        mean = (
            self.schedule.at("posterior_mean_coef1", t, x.ndim) * x0
            + self.schedule.at("posterior_mean_coef2", t, x.ndim) * x
        )
        if noise is None:
            return mean
        return mean + torch.exp(0.5 * self.log_variance(index, x)) * noise

    def add_noise_at(self, x0: torch.Tensor, noise: torch.Tensor, index: int = 0) -> torch.Tensor:
        """q(x_t | x0) at the level of step ``index``."""
        return self.schedule.add_noise(x0, noise, self._t(index, x0.shape[0], x0.device))

    def start(self, noise: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
        """Where sampling starts: ``noise`` itself, or ``init`` noised with it to the first step's level
        (an image-to-image or layout start)."""
        return noise if init is None else self.add_noise_at(init.float(), noise.float())


def cosine_steps(
    steps: int,
    run: int | None = None,
    skip_terminal: bool = False,
    matched: bool = False,
    sharing: float = 0.0,
) -> CosineSteps:
    """The last ``run`` (default all) of ``steps`` steps. ``skip_terminal``: the cosine schedule is one
    step longer and sampling starts one step below pure noise, with the same number of network calls:
    at the cosine schedule's last step alpha_bar is ~1e-5, so an epsilon model's x0 estimate multiplies
    any error in epsilon by ~300; the released model hides this behind dynamic thresholding, without it
    that first step fixes the video's colours wrongly and for good."""
    run = steps if run is None else run
    if not 1 <= run <= steps:
        raise ValueError(f"steps: a run of {run} of {steps} steps is not possible")
    schedule = DiffusionSchedule.cosine(steps + 1 if skip_terminal else steps)
    return CosineSteps(schedule, run - 1, matched, sharing)


def sample_ddpm(
    denoise: X0Denoiser,
    x: torch.Tensor,
    schedule: AncestralSchedule,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Ancestral DDPM: at every step of ``schedule`` the clean estimate, then a sample of the posterior
    with fresh noise drawn from ``generator`` after the network call (none at the last step)."""
    total = len(schedule)
    for index in range(total):
        x0 = denoise(x, index)
        fresh = schedule.noise(tuple(x.shape), generator, x.device) if schedule.draws_noise(index) else None
        x = schedule.step(index, x.float(), x0, fresh)
        if callback is not None:
            callback(index + 1, total)
    return x


def denoise_steps(strength: float, steps: int) -> int:
    """How many of ``steps`` steps a redraw at ``strength`` runs: round(s * steps), at least 1 if s > 0.

    At least one step so that any non-zero strength really redraws (tiny strengths would otherwise
    silently do nothing).
    """
    if strength <= 0.0:
        return 0
    return min(steps, max(1, round(strength * steps)))
