"""Whether the evaluator reads each shape of the synthetic world (the built-in shapes and the opt-in new
ones) from rendered clips, and whether a model's MoVQ keeps it: clips of one object drawn by the world
are analysed as rendered and after an encode-decode round trip, and the evaluator's shape is compared
with the clip's own.

Why: a keyframe adapter can only teach the U-Net latents; a new concept is only learnable if the decoder
draws it (the built-in MoVQ draws pink as white, docs/training.md) and only measurable if the evaluator
names it.

    python tools/movq_shape_roundtrip.py [MODEL] [--clips 40]     # default: the built-in model
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from fusionframes.evaluation.analysis import analyse_clip
from fusionframes.io.checkpoints import load_model
from fusionframes.synthetic import make_sample

SEED, SIZE, FRAMES = 99, 128, 15  # a seed no training set uses; frames per clip


def roundtrip(movq: torch.nn.Module, clip: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(clip).float().permute(0, 3, 1, 2) / 127.5 - 1
    with torch.no_grad():
        y = movq.decode(movq.encode(x))
    return ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def shape_reads(model: str | None, clips: int) -> dict[str, Counter]:
    """Shape -> counts of (as rendered right, after the round trip right, clips) over one-object clips."""
    movq = load_model(model).movq.eval()
    counts: dict[str, Counter] = {}
    index = 0
    while sum(c["clips"] for c in counts.values()) < clips:
        frames, _, truth = make_sample(SEED, index, SIZE, FRAMES, new_shape_share=0.5)
        index += 1
        if len(truth["tracks"]) != 1:
            continue
        shape = truth["tracks"][0]["shape"]
        tally = counts.setdefault(shape, Counter())
        tally["clips"] += 1
        for key, video in (("rendered", frames), ("round trip", roundtrip(movq, frames))):
            found = analyse_clip(video).objects
            tally[key] += bool(found) and found[0].shape == shape
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=None, help="model folder (default: built-in)")
    parser.add_argument("--clips", type=int, default=40, help="one-object clips to read (default 40)")
    args = parser.parse_args()
    for shape, tally in sorted(shape_reads(args.model, args.clips).items()):
        n = tally["clips"]
        print(
            f"{shape:9s} clips {n:3d}  read as rendered {tally['rendered']}/{n}  "
            f"after the MoVQ {tally['round trip']}/{n}"
        )


if __name__ == "__main__":
    main()
