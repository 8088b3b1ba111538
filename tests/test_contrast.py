"""Caption contrast: negatives differ from their caption in exactly one attribute, and the ranking term
trains the keyframe model to denoise better under the true caption."""

from __future__ import annotations

import random

import pytest
import torch

from fusionframes.io.checkpoints import load_model_folder
from fusionframes.training.augment import reverse_caption
from fusionframes.training.config import config_from_dict
from fusionframes.training.contrast import (
    SHAPE_WORDS,
    contrast_captions,
    contrast_rows,
    ranking_loss,
    swap_one_word,
)


def test_swap_one_word_changes_exactly_one_shape() -> None:
    rng = random.Random(0)
    for _ in range(20):
        caption = "a red circle moving left and a blue star rising on a gray background"
        swapped = swap_one_word(caption, SHAPE_WORDS, rng)
        before, after = caption.split(), swapped.split()
        changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert len(changed) == 1 and changed[0][0] in ("circle", "star") and changed[0][1] in SHAPE_WORDS
    assert swap_one_word("a red blob moving left", SHAPE_WORDS, rng) == "a red blob moving left"
    assert swap_one_word("a red starfish", SHAPE_WORDS, rng) == "a red starfish"  # whole words only


def test_contrast_captions_swap_the_same_shape_in_both_directions() -> None:
    captions = ["a red circle moving right", "a blue square rising", "a green star", "plain words"]
    swapped, swapped_reversed = contrast_captions(captions, seed=3)
    for caption, s, sr in zip(captions, swapped, swapped_reversed, strict=True):
        assert sr == reverse_caption(s)  # the same swap, then reversed
        assert (s == caption) == (caption == "plain words")
    assert contrast_captions(captions, seed=3) == (swapped, swapped_reversed)  # reproducible


def test_contrast_rows_pick_a_negative_of_one_kind_for_the_caption_shown() -> None:
    # table rows: captions (0..2), reversals (3..5), shape swaps (6..8), swapped reversals (9..11)
    n = 3
    ids = torch.tensor(
        [[1, 2], [3, 4], [5, 6], [1, 9], [3, 4], [5, 6], [7, 2], [3, 4], [8, 6], [7, 9], [3, 4], [8, 6]]
    )
    # clip 0: direction and shape; clip 1: neither; clip 2: shape only
    idx = torch.tensor([0, 1, 2, 0, 2])
    flip = torch.tensor([False, False, False, True, True])
    seen = set()
    for seed in range(40):
        rows, available = contrast_rows(ids, idx, flip, n, torch.Generator().manual_seed(seed))
        assert available.tolist() == [True, False, True, True, True]
        assert rows[0] in (3, 6) and rows[3] in (0, 9)  # forwards: reversal or swap; backwards: original
        assert rows[2] == 8 and rows[4] == 11  # only a shape negative exists
        seen.add((int(rows[0]), int(rows[3])))
    assert {r for r, _ in seen} == {3, 6}  # both kinds are used


def test_ranking_loss_is_zero_once_the_gap_exceeds_the_margin() -> None:
    right = torch.tensor([1.0, 1.0, 1.0])
    wrong = torch.tensor([1.05, 1.2, 0.5])
    weights = torch.tensor([2.0, 1.0, 1.0])
    available = torch.tensor([True, True, False])
    loss = ranking_loss(right, wrong, weights, available, margin=0.1)
    assert float(loss) == pytest.approx((2.0 * 0.05 + 0.0) / 2)


def test_contrast_term_teaches_the_model_to_prefer_the_true_caption() -> None:
    """The same optimiser steps on one batch widen the gap between the losses under the wrong and the true
    caption (same noise) more with the contrast term than without it."""
    from fusionframes.io.checkpoints import BUILTIN_DIR
    from fusionframes.training.loop import build_objective, caption_tokens

    captions = ["a red circle moving right", "a blue square moving left"]
    latents = torch.randn(2, 4, 4, 16, 16, generator=torch.Generator().manual_seed(0))

    def widening(weight: float) -> float:
        frames = {"num_keyframes": 4, "keyframe_stride": 1, "clip_frames": 4}
        cfg = config_from_dict({**frames, "caption_contrast": weight, "text_dropout": 0.0})
        objective, tokenizer = build_objective(cfg, load_model_folder(BUILTIN_DIR))
        ids, mask = caption_tokens(tokenizer, captions, 32, with_reversed=True, with_contrast=True)
        negatives = (ids[[2, 3]], mask[[2, 3]], torch.tensor([True, True]))  # the direction reversals

        def gap() -> float:  # loss under the wrong caption minus under the true one, same noise, 8 draws
            with torch.no_grad():
                total = 0.0
                for seed in range(8):
                    draw = torch.Generator().manual_seed(seed)
                    wrong = objective(latents, negatives[0], negatives[1], draw)
                    right = objective(latents, ids[:2], mask[:2], torch.Generator().manual_seed(seed))
                    total += float(wrong - right) / 8
            return total

        optimizer = torch.optim.Adam(objective.parameters(), lr=1e-4)
        before = gap()
        for step in range(15):
            optimizer.zero_grad()
            loss = objective(latents, ids[:2], mask[:2], torch.Generator().manual_seed(100 + step), negatives)
            loss.backward()
            optimizer.step()
        return gap() - before

    plain, contrasted = widening(0.0), widening(5.0)
    assert contrasted > plain + 1e-4 and contrasted > 0


def test_caption_contrast_config_is_checked() -> None:
    with pytest.raises(ValueError, match="caption_contrast: must be >= 0"):
        config_from_dict({"caption_contrast": -1.0})
    with pytest.raises(ValueError, match="caption_contrast_margin: must be in"):
        config_from_dict({"caption_contrast": 1.0, "caption_contrast_margin": 2.0})
    with pytest.raises(ValueError, match="caption_contrast: only the keyframes stage uses it"):
        config_from_dict({"caption_contrast": 1.0, "stage": "interpolation"})
