"""Fast multistep solvers from diffusers (DDIM, DPM-Solver++(2M), UniPC) over the same denoisers.

The diffusers schedulers are configured to the 1.0 networks' training schedule (1000-step cosine, i.e.
diffusers' ``squaredcos_cap_v2``), their prediction type and the official dynamic thresholding
(per-sample 0.98 quantile of |x0|, at least 1, no upper cap), so they drive the same networks. They
convert the network output to x0 themselves, so they call the denoiser's guided ``model`` directly.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from fusionframes.diffusion.sampling import StepCallback, video_noise

TRAIN_STEPS = 1000
SOLVERS = ("ddim", "dpm++2m", "unipc")
CLAMPING_SAMPLERS = ("ddpm", "ddim")  # the samplers that can clamp x0 to a static range


def check_clamp_support(name: str, thresholding: float | None) -> None:
    """A static x0 clamp (``thresholding >= 1``) only works with the samplers that implement one."""
    if thresholding is not None and thresholding >= 1.0 and name not in CLAMPING_SAMPLERS:
        raise ValueError(
            f"scheduler: {name!r} cannot clamp x0 to +-{thresholding:g} as this model needs; "
            f"allowed: {', '.join(CLAMPING_SAMPLERS)}"
        )


def _diffusers_scheduler(name: str, prediction: str, percentile: float | None, spacing: str):
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
    raise ValueError(f"scheduler: unknown {name!r}; allowed: ddpm, {', '.join(SOLVERS)}")


@dataclass(frozen=True)
class SolverSteps:
    """A diffusers solver run: ``steps`` timesteps of which the first ``skip_steps`` are left out (an
    image-to-image start). With ``skip_terminal`` "leading" spacing starts below pure noise (t = 950 of
    1000 for 20 steps) instead of at t = 999. ``sharing``: the frame-noise correlation of the initial
    noise (the solvers draw none after it)."""

    name: str
    prediction: str
    percentile: float | None
    steps: int
    skip_steps: int = 0
    skip_terminal: bool = False
    sharing: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.skip_steps < self.steps:
            raise ValueError(
                f"skip_steps: must be an integer in [0, {self.steps - 1}], got {self.skip_steps}"
            )

    def build(self, device: torch.device | str) -> tuple[Any, torch.Tensor]:
        """A fresh scheduler (they keep state between steps) and the timesteps that run."""
        spacing = "leading" if self.skip_terminal else "trailing"
        scheduler = _diffusers_scheduler(self.name, self.prediction, self.percentile, spacing)
        scheduler.set_timesteps(self.steps, device=device)
        if self.skip_steps and hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(self.skip_steps)
        return scheduler, scheduler.timesteps[self.skip_steps :]

    def __len__(self) -> int:
        return self.steps - self.skip_steps

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
        return video_noise(shape, self.sharing, generator, device)

    def start(self, noise: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
        scheduler, timesteps = self.build(noise.device)
        if init is None:
            return noise.float() * scheduler.init_noise_sigma
        return scheduler.add_noise(init.float(), noise.float(), timesteps[:1])


def sample_solver(
    denoise: Any,
    x: torch.Tensor,
    schedule: SolverSteps,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run ``schedule``'s solver from ``x`` (already started: :meth:`SolverSteps.start`); the network is
    told the training timestep of each step's noise level."""
    scheduler, timesteps = schedule.build(x.device)
    extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(x, t)
        time = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
        output = denoise.model(model_input, time).float()
        x = scheduler.step(output, t, x, **extra).prev_sample
        if callback is not None:
            callback(i + 1, total)
    return x
