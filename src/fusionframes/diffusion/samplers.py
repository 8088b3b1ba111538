"""The sampler registry: every name a user may give as ``scheduler``, and the one call that runs it.

``ddpm`` is the one ancestral loop (:func:`fusionframes.diffusion.sampling.sample_ddpm`); the others
are diffusers' solvers (:mod:`fusionframes.diffusion.solvers`). Which one runs follows from the
schedule the network's parameterisation built for that name.
"""

from __future__ import annotations

from typing import Any

import torch

from fusionframes.diffusion.sampling import StepCallback, sample_ddpm
from fusionframes.diffusion.solvers import SOLVERS, SolverSteps, check_clamp_support, sample_solver

SAMPLERS: tuple[str, ...] = ("ddpm", *SOLVERS)

__all__ = ["SAMPLERS", "check_clamp_support", "check_scheduler", "run_sampler"]


def check_scheduler(name: Any) -> str:
    if name not in SAMPLERS:
        raise ValueError(f"scheduler: unknown {name!r}; allowed: {', '.join(SAMPLERS)}")
    return name


def run_sampler(
    denoise: Any,
    x: torch.Tensor,
    schedule: Any,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Sample from ``x`` (a started noise: ``schedule.start``) with the sampler ``schedule`` is for."""
    if isinstance(schedule, SolverSteps):
        return sample_solver(denoise, x, schedule, generator, callback)
    return sample_ddpm(denoise, x, schedule, generator, callback)
