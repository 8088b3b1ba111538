"""How much can each caption word tell a keyframe model at pure noise? There its best prediction is the
mean of the training latents its caption allows, so the share of their variance an attribute explains
is what the loss rewards for reading that word where only the words can say it.

    python tools/attribute_signal.py --data data/shapes --latents runs/keyframes5/latents-rank0.safetensors

``--latents`` is a keyframe run's latent cache (``latents-rank0.safetensors``: ``clip{i}`` in the data
set's order). Single-object clips without a camera pan are used; each attribute is measured on the
residual after the colour and background means, since those two explain most of the variance.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch

from fusionframes.synthetic import parse_prompt

Spec = dict
ATTRIBUTES: dict[str, Callable[[Spec], object]] = {
    "motion": lambda spec: spec["objects"][0].get("motion"),
    "shape": lambda spec: spec["objects"][0].get("shape"),
    "size": lambda spec: spec["objects"][0].get("size"),
    "colour": lambda spec: spec["objects"][0].get("colour"),
    "background": lambda spec: spec.get("background"),
}


def group_residual(latents: torch.Tensor, labels: Sequence[object]) -> torch.Tensor:
    """``latents [N, ...]`` minus the mean of the rows sharing their label."""
    groups: dict[object, list[int]] = defaultdict(list)
    for row, label in enumerate(labels):
        groups[label].append(row)
    out = latents.clone()
    for rows in groups.values():
        out[rows] = latents[rows] - latents[rows].mean(0)
    return out


def explained_share(latents: torch.Tensor, labels: Sequence[object], given: Sequence[object]) -> float:
    """Percent of the variance left after the ``given`` group means that ``labels`` explain on top."""
    base = group_residual(latents, given)
    rest = group_residual(base, labels)
    return float(100 * (1 - rest.pow(2).mean() / base.pow(2).mean()))


def attribute_signal(latents: torch.Tensor, captions: Sequence[str]) -> dict:
    """Variance shares for single-object, pan-free clips (the others are skipped)."""
    specs = [parse_prompt(text) for text in captions]
    rows = [i for i, s in enumerate(specs) if s and len(s["objects"]) == 1 and not s.get("camera_pan")]
    if not rows:
        raise ValueError("captions: no single-object clip without a camera pan")
    x = latents[rows].float()
    kept = [specs[i] for i in rows]
    nothing = [0] * len(rows)
    colour_bg = [(ATTRIBUTES["colour"](s), ATTRIBUTES["background"](s)) for s in kept]
    report = {"clips": len(rows), "mse": float(x.sub(x.mean(0)).pow(2).mean())}
    report["alone"] = {
        name: round(explained_share(x, [key(s) for s in kept], nothing), 2)
        for name, key in ATTRIBUTES.items()
    }
    report["given_colour_and_background"] = {
        name: round(explained_share(x, [key(s) for s in kept], colour_bg), 2)
        for name, key in ATTRIBUTES.items()
        if name not in ("colour", "background")
    }
    background = [ATTRIBUTES["background"](s) for s in kept]
    report["colour_given_background"] = round(
        explained_share(x, [ATTRIBUTES["colour"](s) for s in kept], background), 2
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the data set the latents were encoded from")
    parser.add_argument("--latents", required=True, help="a keyframe run's latents-rank0.safetensors")
    args = parser.parse_args()
    from safetensors.torch import load_file

    from fusionframes.training.data import make_dataset

    cache = load_file(args.latents)
    captions = [item["caption"] for item in make_dataset(args.data, num_frames=1, size=32)]
    if len(captions) != len(cache):
        parser.error(f"--latents: holds {len(cache)} clips, --data has {len(captions)}")
    latents = torch.stack([cache[f"clip{i}"] for i in range(len(captions))])
    print(json.dumps(attribute_signal(latents, captions), indent=2))


if __name__ == "__main__":
    main()
