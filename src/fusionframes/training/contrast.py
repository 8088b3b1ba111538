"""Caption contrast: a clip must be denoised better under its own caption than under a wrong one.

The plain diffusion loss barely rewards a small model for reading the words that only decide where a
small object is (its direction of motion) or its outline (its shape): those words change a few percent of
the pixels, and colour and background are learned first and well. The contrast term pairs each clip with a
caption that differs in exactly one such attribute (the direction words swapped as in a clip played
backwards, or the shape named as another) and asks, at the same noise and timestep, for a lower loss under
the true caption by a relative margin. This is the ranking a diffusion model used as a classifier makes,
turned into a training signal.
"""

from __future__ import annotations

import random
import re

import torch

from fusionframes.training.augment import reverse_caption
from fusionframes.training.synth import SHAPES as SHAPE_WORDS  # swapping one for another: the shape contrast


def swap_one_word(caption: str, words: tuple[str, ...], rng: random.Random) -> str:
    """``caption`` with one of its ``words`` (chosen at random) replaced by another word of the group.

    Returns ``caption`` unchanged when it names none of them.
    """
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
    found = list(pattern.finditer(caption))
    if not found or len(words) < 2:
        return caption
    match = rng.choice(found)
    others = [w for w in words if w != match.group().lower()]
    return caption[: match.start()] + rng.choice(others) + caption[match.end() :]


def contrast_rows(
    ids: torch.Tensor,
    idx: torch.Tensor,
    flip: torch.Tensor,
    num_clips: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the caption table holding each video's wrong caption, and whether it has one.

    The table (see ``loop.caption_tokens`` with contrast) is: captions, their reversals, the captions
    with a shape swapped, the reversals with the same swap. A video shown backwards (``flip``) has the
    reversed caption, so its direction negative is the original caption. Where a video has both kinds of
    negative, one is picked at random.
    """
    n = num_clips
    direction = torch.where(flip, idx, idx + n)
    shape = torch.where(flip, idx + 3 * n, idx + 2 * n)
    shown = torch.where(flip, idx + n, idx)
    has_direction = (ids[direction] != ids[shown]).any(dim=1)
    has_shape = (ids[shape] != ids[shown]).any(dim=1)
    pick_shape = torch.rand(len(idx), generator=generator) < 0.5
    use_shape = has_shape & (pick_shape | ~has_direction)
    rows = torch.where(use_shape, shape, direction)
    return rows, has_direction | has_shape


def contrast_captions(captions: list[str], seed: int) -> tuple[list[str], list[str]]:
    """(the captions with a shape swapped, their reversals with the same swap): rows 2n..4n-1 of the table."""
    rng = random.Random(seed)
    swapped, swapped_reversed = [], []
    for caption in captions:
        state = rng.getstate()
        swapped.append(swap_one_word(caption, SHAPE_WORDS, rng))
        rng.setstate(state)  # the same choice for the reversed caption (direction words are not shapes)
        swapped_reversed.append(swap_one_word(reverse_caption(caption), SHAPE_WORDS, rng))
    return swapped, swapped_reversed


def ranking_loss(
    right: torch.Tensor, wrong: torch.Tensor, weights: torch.Tensor, available: torch.Tensor, margin: float
) -> torch.Tensor:
    """Mean over videos with a negative of ``weights * relu(margin * right - (wrong - right))``.

    ``right``/``wrong``: per-video denoising losses under the true and the wrong caption (same noise and
    timestep). The margin is relative to the (detached) true-caption loss, so it is the same demand at
    every noise level.
    """
    gap = wrong - right
    hinge = torch.relu(margin * right.detach() - gap) * weights
    count = available.sum().clamp(min=1)
    return (hinge * available).sum() / count
