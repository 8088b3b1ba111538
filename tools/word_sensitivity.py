"""How much does the keyframe U-Net's output move when one word of the prompt changes?

    python tools/word_sensitivity.py [--model DIR] [--timesteps 950 700 400]

For each swap (``red->blue``, ``right->left``, ...) the same noisy keyframes are denoised under the base
prompt and under the prompt with that word replaced; the RMS difference of the two outputs says how much
the network reads that word at that noise level. A word the model ignores moves it about as little as a
word that changes nothing on screen.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence

import torch

from fusionframes import TextToVideoPipeline
from fusionframes.pipelines.stages import temporal_positions

BASE_PROMPT = "a red circle moving right on a gray background"
SWAPS = ("red->blue", "circle->square", "circle->star", "right->left", "gray->white")


def swapped(prompt: str, swap: str) -> str:
    """``prompt`` with the word before ``->`` replaced by the one after it."""
    old, sep, new = swap.partition("->")
    if not sep or not old or not new:
        raise ValueError(f"swap: expected 'old->new', got {swap!r}")
    pattern = rf"\b{re.escape(old)}\b"
    if not re.search(pattern, prompt):
        raise ValueError(f"swap: {old!r} is not a word of the prompt {prompt!r}")
    return re.sub(pattern, new, prompt, count=1)


@torch.no_grad()
def word_sensitivity(
    pipe: TextToVideoPipeline,
    prompt: str,
    swaps: Sequence[str],
    timesteps: Sequence[int],
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """RMS output change per swap and timestep (network time on the 1000-step schedule)."""
    unet = pipe.components.keyframe_unet
    frames = unet.config.num_frames
    if frames is None:
        raise ValueError("model: needs a video (keyframe) model")
    prompts = {swap: swapped(prompt, swap) for swap in swaps}
    dtype = next(unet.parameters()).dtype
    factor = pipe.config.movq.scale_factor
    height, width = pipe.config.sampling.height // factor, pipe.config.sampling.width // factor
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, unet.config.num_channels, height, width, generator=generator)
    x = x.to(pipe.device, dtype)
    positions = temporal_positions(frames, pipe.device)

    encoded = {text: pipe.encode_prompts(text, None)[:2] for text in (prompt, *prompts.values())}

    def output(text: str, step: int) -> torch.Tensor:
        context, mask = encoded[text]
        time = torch.full((frames,), step, device=pipe.device)
        return unet(
            x,
            time,
            context.expand(frames, -1, -1).to(dtype),
            mask.expand(frames, -1).bool(),
            positions,
            num_frames=frames,
        ).float()

    report: dict[str, dict[str, float]] = {}
    for step in timesteps:
        base = output(prompt, step)
        report[str(step)] = {
            swap: round(float((output(text, step) - base).pow(2).mean().sqrt()), 5)
            for swap, text in prompts.items()
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin", help="builtin (default) | a model folder")
    parser.add_argument("--prompt", default=BASE_PROMPT)
    parser.add_argument("--swaps", nargs="+", default=list(SWAPS), help="old->new word pairs")
    parser.add_argument("--timesteps", nargs="+", type=int, default=[950, 700, 400])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bad = [t for t in args.timesteps if not 0 <= t < 1000]
    if bad:
        parser.error(f"--timesteps: each must be in [0, 1000), got {bad}")
    for swap in args.swaps:
        try:
            swapped(args.prompt, swap)
        except ValueError as error:
            parser.error(f"--swaps: {error}")
    pipe = TextToVideoPipeline.from_pretrained(args.model, device="cpu", dtype="float32")
    print(json.dumps(word_sensitivity(pipe, args.prompt, args.swaps, args.timesteps, args.seed), indent=2))


if __name__ == "__main__":
    main()
