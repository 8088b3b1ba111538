"""The cosine noise schedule of the official sampler, with every quantity derived once."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def cosine_betas(steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of the cosine schedule (Nichol & Dhariwal) discretised into ``steps`` steps."""
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor(
        [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)],
        dtype=torch.float32,
    )


@dataclass(frozen=True)
class DiffusionSchedule:
    """Forward-process and posterior coefficients for a schedule of ``len(betas)`` steps (float32)."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance: torch.Tensor

    @classmethod
    def cosine(cls, steps: int) -> DiffusionSchedule:
        return cls.from_betas(cosine_betas(steps))

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> DiffusionSchedule:
        alphas = 1.0 - betas
        acp = torch.cumprod(alphas, dim=0)
        acp_prev = torch.cat([torch.ones(1, dtype=betas.dtype), acp[:-1]])
        variance = betas * (1.0 - acp_prev) / (1.0 - acp)
        # Step 0 has zero variance; its log is clipped to step 1's value (never used for noise). A
        # one-step schedule has no step 1: a tiny floor keeps the log finite.
        first = variance[1:2] if len(variance) > 1 else variance[:1].clamp_min(1e-20)
        log_variance = torch.log(torch.cat([first, variance[1:]]))
        return cls(
            betas=betas,
            alphas_cumprod=acp,
            alphas_cumprod_prev=acp_prev,
            sqrt_alphas_cumprod=acp.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1.0 - acp).sqrt(),
            posterior_mean_coef1=acp_prev.sqrt() * betas / (1.0 - acp),
            posterior_mean_coef2=alphas.sqrt() * (1.0 - acp_prev) / (1.0 - acp),
            posterior_variance=variance,
            posterior_log_variance=log_variance,
        )

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]

    @property
    def time_scale(self) -> int:
        """Model time = step index x this, so the networks always see the 0..1000 range."""
        return 1000 // self.num_steps

    def network_time(self, t: torch.Tensor, matched: bool = False) -> torch.Tensor:
        """What a network trained on the 1000-step schedule is told at step indices ``t`` of this one.

        Official: ``t * time_scale``. Step ``t`` of an S-step schedule is at the noise level of training
        step ``(t + 1) * 1000 / S - 1``, so that is one sampling interval less noise than there is; with
        few steps the last step then leaves noise in. ``matched`` gives the matching training step.
        """
        if matched:
            return torch.div((t + 1) * 1000, self.num_steps, rounding_mode="floor") - 1
        return t * self.time_scale

    def at(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """Coefficient ``name`` at step indices ``t``, shaped to broadcast over an ``ndim`` tensor."""
        values = getattr(self, name).to(t.device)[t]
        return values.reshape(-1, *([1] * (ndim - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0)."""
        return (
            self.at("sqrt_alphas_cumprod", t, x0.ndim) * x0
            + self.at("sqrt_one_minus_alphas_cumprod", t, x0.ndim) * noise
        )

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The v-prediction target: sqrt(a) * eps - sqrt(1 - a) * x0."""
        return (
            self.at("sqrt_alphas_cumprod", t, x0.ndim) * noise
            - self.at("sqrt_one_minus_alphas_cumprod", t, x0.ndim) * x0
        )
