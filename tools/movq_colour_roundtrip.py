"""Which colours a model's MoVQ can draw: each colour of the synthetic world (the palette and the opt-in
new colours) as a disc on each background, encoded and decoded, and the evaluator's name for the centre
of the reconstruction.

Why: a keyframe adapter can only teach the U-Net latents; what the video shows is the decoder's reading
of them. The built-in MoVQ decodes pink as white on every background although its encoder keeps pink
apart, so no keyframe LoRA can make the built-in model draw pink (docs/training.md, LoRA demonstration).

    python tools/movq_colour_roundtrip.py [MODEL]      # default: the built-in model
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from fusionframes.evaluation.analysis import name_colour
from fusionframes.io.checkpoints import load_model
from fusionframes.synthetic.world import BACKGROUNDS, COLOURS

SIZE, DISC, CORE = 128, 22, 14  # frame, disc radius, and the centre the colour is read from (pixels)


def roundtrip_names(model: str | None) -> dict[str, list[str]]:
    """Colour -> the evaluator's name of its reconstruction on each background it contrasts with."""
    movq = load_model(model).movq.eval()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    radius = (yy - SIZE // 2) ** 2 + (xx - SIZE // 2) ** 2
    disc, core = radius < DISC**2, radius < CORE**2
    names: dict[str, list[str]] = {colour: [] for colour in COLOURS}
    for background in BACKGROUNDS.values():
        colours = {c: rgb for c, rgb in COLOURS.items() if rgb != background}
        images = np.zeros((len(colours), SIZE, SIZE, 3), np.uint8)
        images[:] = background
        for image, rgb in zip(images, colours.values(), strict=True):
            image[disc] = rgb
        x = torch.from_numpy(images).float().permute(0, 3, 1, 2) / 127.5 - 1
        with torch.no_grad():
            y = movq.decode(movq.encode(x))
        decoded = ((y.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
        for colour, image in zip(colours, decoded, strict=True):
            names[colour].append(name_colour(np.median(image[core], axis=0))[0])
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=None, help="model folder (default: built-in)")
    args = parser.parse_args()
    for colour, found in roundtrip_names(args.model).items():
        right = sum(name == colour for name in found)
        print(f"{colour:8s} {right}/{len(found)} decoded as itself  {found}")


if __name__ == "__main__":
    main()
