"""The evaluator's scores on real synthetic clips passed through a model's MoVQ: the best any keyframe
model can reach with that decoder.

    python tools/movq_ceiling.py [--model DIR] [--clips 32] [--seed 123]

Renders training-grammar scenes (29 frames, 128 px), encodes and decodes every frame with the MoVQ, and
scores both the raw and the decoded clips against their captions with ``fusionframes.evaluation``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from fusionframes.evaluation.synthetic import score_frames
from fusionframes.io.checkpoints import load_model
from fusionframes.training.synth import caption, parse_prompt, render_clip, sample_scene

METRICS = ("colour", "shape", "motion", "background", "count")


def through_movq(movq: torch.nn.Module, clip: np.ndarray) -> np.ndarray:
    pixels = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        decoded = movq.decode(movq.encode(pixels)).clamp(-1, 1)
    return ((decoded + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="builtin (default) | a model folder")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    if args.clips < 1:
        parser.error(f"--clips: must be >= 1, got {args.clips}")
    movq = load_model(args.model).movq.float().eval()
    keyframes = list(range(0, 29, 4))
    scores: dict[str, list[dict]] = {"raw": [], "movq": []}
    for i in range(args.clips):
        rng = np.random.default_rng([args.seed, i])
        scene = sample_scene(rng)
        spec = parse_prompt(caption(scene, rng))
        clip = render_clip(scene, 128, 29)
        for name, video in (("raw", clip), ("movq", through_movq(movq, clip))):
            scores[name].append(score_frames(spec, video, keyframes)["scores"])
    report = {}
    for name, rows in scores.items():
        report[name] = {}
        for metric in METRICS:
            values = [row[metric] for row in rows if row[metric] is not None]
            report[name][metric] = round(100 * sum(values) / len(values), 1)
    print(json.dumps({"clips": args.clips, "seed": args.seed, **report}, indent=2))


if __name__ == "__main__":
    main()
