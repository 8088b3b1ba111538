"""tools/attribute_signal.py: the share of the latents' variance each caption attribute explains."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "attribute_signal", Path(__file__).parents[1] / "tools" / "attribute_signal.py"
)
attribute_signal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(attribute_signal)


def test_explained_share_of_a_label_that_decides_everything_or_nothing() -> None:
    g = torch.Generator().manual_seed(0)
    labels = [i % 4 for i in range(400)]
    centres = torch.randn(4, 10, generator=g)
    decided = centres[labels]
    assert attribute_signal.explained_share(decided, labels, [0] * 400) == pytest.approx(100.0)
    noise = torch.randn(400, 10, generator=g)
    assert abs(attribute_signal.explained_share(noise, labels, [0] * 400)) < 3.0


def test_attribute_signal_measures_each_word_after_colour_and_background() -> None:
    """Latents made of a large background part, a smaller colour part and a small motion part; the shape
    word changes nothing."""
    g = torch.Generator().manual_seed(1)
    colours, shapes, motions, backgrounds = (
        ["red", "blue"],
        ["circle", "square"],
        ["right", "left"],
        ["gray", "white"],
    )
    parts = {word: torch.randn(6, generator=g) for word in colours + motions + backgrounds}
    captions, rows = [], []
    for _ in range(5):
        for colour, shape, motion, bg in itertools.product(colours, shapes, motions, backgrounds):
            captions.append(f"a {colour} {shape} moving {motion} on a {bg} background")
            rows.append(
                4 * parts[bg] + parts[colour] + 0.3 * parts[motion] + 0.1 * torch.randn(6, generator=g)
            )
    captions.append("two circles, a red one rising and a blue one falling, gray background")  # skipped
    rows.append(torch.zeros(6))
    report = attribute_signal.attribute_signal(torch.stack(rows), captions)
    assert report["clips"] == 80
    assert report["alone"]["background"] > 80
    given = report["given_colour_and_background"]
    assert given["motion"] > 50 and given["shape"] < 5
    with pytest.raises(ValueError, match="no single-object clip"):
        attribute_signal.attribute_signal(torch.zeros(1, 6), ["not a caption at all"])
