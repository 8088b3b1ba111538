"""Classifier-free guidance: a weighted sum of network branches run as one batch.

A guided model runs the network once on every branch's rows stacked along the batch and returns
``sum_k w_k * branch_k``. Kandinsky Video 1.0, and 1.1's first frame and interpolation, use two
branches, ``(w + 1) * cond - w * uncond``; 1.1's keyframes use three (text + image, image only,
neither): ``(1 - wi) * u + (wi - wp) * i + wp * c``. The sum runs from the last branch to the first,
which is the order the reference writes both formulas in, so the float arithmetic is the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

# What a guided model is: (x, network time) -> the network's (combined) output.
Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BranchWeights:
    """One weight per branch, in the order the branches are stacked in the batch."""

    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.weights or not all(math.isfinite(w) for w in self.weights):
            raise ValueError(f"guidance weights: must be finite numbers, got {self.weights}")

    def __len__(self) -> int:
        return len(self.weights)

    def combine(self, stacked: torch.Tensor) -> torch.Tensor:
        """``stacked`` holds the branches one after another along dim 0; returns their weighted sum."""
        branches = stacked.chunk(len(self.weights))
        total = None
        for weight, branch in zip(reversed(self.weights), reversed(branches), strict=True):
            term = weight * branch
            total = term if total is None else total + term
        assert total is not None
        return total


def cond_uncond(weight: float) -> BranchWeights:
    """Two branches (conditional, unconditional): ``(w + 1) * cond - w * uncond``; 0 is no guidance."""
    return BranchWeights((weight + 1.0, -weight))


def text_image(prompt_weight: float, image_weight: float) -> BranchWeights:
    """Three branches (text + image, image only, neither) of 1.1's keyframes: the prompt weight scales
    the text direction (c - i), the image weight the image direction (i - u)."""
    return BranchWeights((prompt_weight, image_weight - prompt_weight, 1.0 - image_weight))


def guided(run_all: Model, weights: BranchWeights | float) -> Model:
    """Wrap ``run_all(x, t) -> [branch_1; ...; branch_K]`` (one network pass) into a guided model; a
    plain number is the two-branch weight of :func:`cond_uncond`."""
    if not isinstance(weights, BranchWeights):
        weights = cond_uncond(weights)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return weights.combine(run_all(x, t).float())

    return model
