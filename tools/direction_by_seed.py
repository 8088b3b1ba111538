"""Which way do objects go: the direction word, or the seed? One prompt with each of four direction
words, generated with the same seeds, tracked with the evaluator's analyser.

    python tools/direction_by_seed.py [--model DIR] [--seeds 4] [--guidance 3] [--json OUT]

A model that reads the words moves the object four ways for one seed; a model that ignores them moves it
the same way for every word, and its direction changes with the seed instead (the initial noise decides).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from fusionframes import TextToVideoPipeline
from fusionframes.evaluation.analysis import analyse_clip

WORDS = ("right", "left", "up", "down")
TEMPLATE = "a red circle moving {} on a gray background"


def tracked_direction(frames: np.ndarray, colour: str = "red") -> str | None:
    """The analyser's motion label of the first object of ``colour``; None when none is found."""
    tracks = [o for o in analyse_clip(frames).objects if o.colour == colour]
    return tracks[0].direction if tracks else None


def directions_by_seed(
    pipe: TextToVideoPipeline, seeds: int, guidance: float | None
) -> list[dict[str, str | None]]:
    """One row per seed: direction word -> the tracked direction (keyframes only, fps low)."""
    rows = []
    for seed in range(seeds):
        row = {}
        for word in WORDS:
            extra = {} if guidance is None else {"guidance_scale": guidance}
            out = pipe(TEMPLATE.format(word), seed=seed, fps="low", output_type="np", progress=False, **extra)
            row[word] = tracked_direction(out.frames)
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, str | None]]) -> dict[str, float]:
    """``as_asked``: % of videos moving as their word says; ``same_for_all_words``: % of seeds whose four
    videos all move the same way (high when the seed, not the word, decides)."""
    asked = [row[w] == f"moving {w}" for row in rows for w in WORDS]
    same = [len(set(row.values())) == 1 for row in rows]
    return {
        "as_asked": round(100 * sum(asked) / len(asked), 1),
        "same_for_all_words": round(100 * sum(same) / len(same), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin", help="builtin (default) | a model folder")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's")
    parser.add_argument("--json", default=None, help="write the rows and the summary here")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds: must be >= 1, got {args.seeds}")
    pipe = TextToVideoPipeline.from_pretrained(args.model, device="cpu")
    rows = directions_by_seed(pipe, args.seeds, args.guidance)
    for seed, row in enumerate(rows):
        print(f"seed {seed}: " + ", ".join(f"{w} -> {d}" for w, d in row.items()))
    summary = summarise(rows)
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "rows": rows, **summary}, handle, indent=2)


if __name__ == "__main__":
    main()
