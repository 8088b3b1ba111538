"""The evaluator's scores on real synthetic clips passed through a model's MoVQ: the best any keyframe
model can reach with that decoder.

    python tools/movq_ceiling.py [--model DIR] [--clips 32] [--seed 0]

Runs ``fusionframes.evaluation.ground_truth_check`` (rendered scenes, held-out triples included, 29
frames at 128 px) with one more variant: every frame encoded and decoded by the MoVQ.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from fusionframes.evaluation import ground_truth_check
from fusionframes.io.checkpoints import load_model


def movq_round_trip(movq: torch.nn.Module):
    def transform(clip: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch.no_grad():
            decoded = movq.decode(movq.encode(pixels)).clamp(-1, 1)
        return ((decoded + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()

    return transform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="builtin (default) | a model folder")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.clips < 1:
        parser.error(f"--clips: must be >= 1, got {args.clips}")
    movq = load_model(args.model).movq.float().eval()
    report = ground_truth_check(args.clips, args.seed, 128, 29, {"movq": movq_round_trip(movq)})
    summary = {name: report[name]["accuracy"] for name in ("raw", "mp4", "movq")}
    print(json.dumps({"clips": args.clips, "seed": args.seed, **summary}, indent=2))


if __name__ == "__main__":
    main()
