"""Classifier-free guidance as a wrapper around a plain denoiser ``f(x, model_time) -> output``."""

from __future__ import annotations

from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def combine_guidance(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    """The official form ``(w + 1) * cond - w * uncond`` (w = 0 means no guidance)."""
    return (weight + 1.0) * cond - weight * uncond


def guided(run_both: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], weight: float) -> Denoiser:
    """Wrap a network call that returns ``[cond; uncond]`` stacked along the batch into a denoiser.

    Both branches go through the network as one batch (one pass instead of two).
    """

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond, uncond = run_both(x, t).float().chunk(2)
        return combine_guidance(cond, uncond, weight)

    return denoise
