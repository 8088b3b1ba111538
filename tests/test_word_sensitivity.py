"""tools/word_sensitivity.py: the keyframe U-Net's output change when one prompt word is swapped."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fusionframes import TextToVideoPipeline

_spec = importlib.util.spec_from_file_location(
    "word_sensitivity", Path(__file__).parents[1] / "tools" / "word_sensitivity.py"
)
word_sensitivity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(word_sensitivity)


def test_swapped_replaces_one_whole_word() -> None:
    assert word_sensitivity.swapped("a red circle moving right", "right->left") == "a red circle moving left"
    with pytest.raises(ValueError, match="'blue' is not a word of the prompt"):
        word_sensitivity.swapped("a red circle", "blue->green")
    with pytest.raises(ValueError, match="expected 'old->new'"):
        word_sensitivity.swapped("a red circle", "red")


def test_a_swap_moves_the_output_and_no_swap_does_not(tiny_model_dir) -> None:
    pipe = TextToVideoPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    report = word_sensitivity.word_sensitivity(pipe, "a red star", ["red->blue", "red->red"], [900, 100])
    assert set(report) == {"900", "100"}
    for row in report.values():
        assert row["red->red"] == 0.0
        assert row["red->blue"] > 0.0
