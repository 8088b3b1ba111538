"""Make the README gallery with the shipped built-in model (offline, CPU, fixed seeds).

    python tools/gallery.py            # writes docs/images/gallery_*.png and *.gif

Text-to-video: a contact sheet of keyframes for training-grammar and held-out prompts, and two GIFs.
Animation mode: a 4 s, 24 fps zoom-in (8 frames shown). Mini-movie: three text-to-video scenes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PROMPTS = [
    "a red circle moving right on a gray background",
    "a yellow star moving up on a navy background",
    "a green square growing on a beige background",
    "a white triangle moving down-left on a teal background",
    "a purple circle rotating on a white background",
    "a blue triangle moving right on a gray background",  # held out: never seen in training
    "a red star moving down on a gray background",  # held out
]
GIFS = {
    "gallery_red_circle.gif": PROMPTS[0],
    "gallery_blue_triangle_heldout.gif": PROMPTS[5],
}
MOVIE = [
    "a red circle moving right on a gray background",
    "a blue square moving up on a white background",
    "a yellow star rotating on a navy background",
]


def strip(frames: np.ndarray, count: int = 8) -> np.ndarray:
    index = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return frames[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from fusionframes.evaluation.synthetic import contact_sheet
    from fusionframes.io.video import write_video
    from fusionframes.pipelines.animation import AnimationPipeline
    from fusionframes.pipelines.movie import make_movie
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(args.model, device="cpu")
    rows, labels, videos = [], [], {}
    for i, prompt in enumerate(PROMPTS):
        video = pipe(prompt, seed=i, output_type="np", progress=False)
        videos[prompt] = video
        rows.append(video.frames[video.keyframe_indices])
        held = " (held out)" if i >= 5 else ""
        labels.append(f"{prompt}{held}  - seed {i}, keyframes of {len(video.frames)} frames")
    print(contact_sheet(rows, labels, out / "gallery_t2v.png"))
    for name, prompt in GIFS.items():
        video = videos[prompt]
        print(write_video(video.frames, out / name, fps=video.fps))

    animate = AnimationPipeline(pipe)
    anim = animate(PROMPTS[1], motion="zoom_in", seconds=4, fps=24, seed=3, output_type="np", progress=False)
    label = f"animation: '{PROMPTS[1]}', zoom in, 4 s at 24 fps ({len(anim.frames)} frames; 8 shown)"
    print(contact_sheet([strip(np.asarray(anim.frames))], [label], out / "gallery_animation.png"))

    movie = make_movie(
        MOVIE, durations=[2, 2, 2], transition="crossfade", pipeline=pipe, seed=5, output_type="np"
    )
    frames = np.asarray(movie.frames)
    label = "mini-movie: " + " | ".join(MOVIE) + f" (crossfades, {len(frames)} frames; 12 shown)"
    print(contact_sheet([strip(frames, 12)], [label], out / "gallery_movie.png", columns=12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
