"""Write the parameter manifest of the official Kandinsky Video constructors at the released sizes.

The structure test (tests/test_structure.py) checks that our networks, built on the meta device from
the presets, have exactly these parameter names and shapes. The official code is not a dependency, so
this is run once, by hand, against a checkout of ai-forever/KandinskyVideo (needs torch and einops):

    python tools/official_structure_manifest.py --v10 CHECKOUT_OF_kandinsky_video_1_0 \
        --v11 CHECKOUT_OF_main -o tests/data/official_structure.json.gz

Only the official modules' files are imported (by path, without their package ``__init__``, which
pulls in the pipeline), and every network is built on the meta device: nothing is allocated.
The sizes are the released ones: 1.0 from its README config, 1.1 from the hub's ``configs.json``
as far as it is known (see fusionframes.io.official_kv11).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch

UNET_10 = {
    "model_channels": 384,
    "init_channels": 192,
    "time_embed_dim": 1536,
    "context_dim": 4096,
    "groups": 32,
    "head_dim": 64,
    "expansion_ratio": 4,
    "compression_ratio": 2,
    "dim_mult": [1, 2, 4, 8],
    "num_blocks": [3, 3, 3, 3],
    "add_cross_attention": [False, True, True, True],
    "add_self_attention": [False, True, True, True],
}
# A small configuration with one residual group per level, which the official constructor accepts.
ONE_BLOCK = {
    **UNET_10,
    "model_channels": 8,
    "init_channels": 8,
    "time_embed_dim": 16,
    "context_dim": 16,
    "groups": 4,
    "head_dim": 8,
    "expansion_ratio": 2,
    "dim_mult": [1, 2, 4],
    "num_blocks": [1, 1, 2],
    "add_cross_attention": [False, True, True],
    "add_self_attention": [False, True, True],
}
MOVQ = {
    "ch": 256,
    "ch_mult": [1, 2, 2, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [32],
    "resolution": 256,
    "z_channels": 4,
    "in_channels": 3,
    "out_ch": 3,
    "double_z": False,
    "dropout": 0.0,
}


def load_package(root: Path, package: str, modules: list[str]) -> dict[str, types.ModuleType]:
    """Import ``package.<module>`` files from ``root`` without running the package's ``__init__``."""
    loaded = {}
    for name in [package, *sorted({f"{package}.{m.rsplit('.', 1)[0]}" for m in modules if "." in m})]:
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [str(root / name.replace(".", "/"))]
            sys.modules[name] = stub
    # The package's utils.py pulls in the training stack (omegaconf...); the MoVQ needs only freeze().
    utils = types.ModuleType(f"{package}.utils")
    utils.freeze = lambda module: module
    sys.modules[f"{package}.utils"] = utils
    for module in modules:
        full = f"{package}.{module}"
        path = root / (full.replace(".", "/") + ".py")
        spec = importlib.util.spec_from_file_location(full, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[full] = mod
        spec.loader.exec_module(mod)
        loaded[module] = mod
    return loaded


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in module.state_dict().items()}


def build_v10(root: Path) -> dict[str, dict]:
    mods = load_package(root, "video_kandinsky3", ["model.utils", "model.nn", "model.unet", "movq"])
    unet, movq = mods["model.unet"].UNet, mods["movq"].MoVQ
    with torch.device("meta"):
        return {
            "keyframe_unet": shapes(unet(**UNET_10, num_channels=4, out_channels=4, num_frames=15)),
            "interpolation_unet": shapes(
                unet(**UNET_10, num_channels=20, out_channels=12, interpolation=True)
            ),
            "movq": shapes(movq(MOVQ)),
            "one_block_keyframe_unet": shapes(
                unet(**ONE_BLOCK, num_channels=4, out_channels=4, num_frames=4)
            ),
            "one_block_interpolation_unet": shapes(
                unet(**ONE_BLOCK, num_channels=20, out_channels=12, interpolation=True)
            ),
        }


def build_v11(root: Path) -> dict[str, dict]:
    mods = load_package(
        root, "kandinsky_video", ["model.utils", "model.nn", "model.unet", "model.unet_interpolation", "movq"]
    )
    unet, interpolation, movq = (
        mods["model.unet"].UNet,
        mods["model.unet_interpolation"].UNet,
        mods["movq"].MoVQ,
    )
    temporal = {"temporal": True, "temporal_attention_block": True}
    with torch.device("meta"):
        return {
            "keyframe_unet": shapes(
                unet(**UNET_10, num_channels=9, out_channels=4, noise_augmentation=True, motion_score=True)
            ),
            "interpolation_unet": shapes(interpolation(**UNET_10, num_channels=20, out_channels=12)),
            "movq": shapes(movq(MOVQ)),
            "video_movq": shapes(movq({**MOVQ, **temporal})),
            "one_block_keyframe_unet": shapes(
                unet(**ONE_BLOCK, num_channels=9, out_channels=4, noise_augmentation=True, motion_score=True)
            ),
            "one_block_interpolation_unet": shapes(
                interpolation(**ONE_BLOCK, num_channels=20, out_channels=12)
            ),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--v10", type=Path, required=True, help="checkout of branch kandinsky_video_1_0")
    parser.add_argument("--v11", type=Path, required=True, help="checkout of branch main (1.1)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output .json.gz")
    args = parser.parse_args(argv)
    manifest = {"kandinsky-video-1.0": build_v10(args.v10), "kandinsky-video-1.1": build_v11(args.v11)}
    tmp = args.out.with_name(args.out.name + ".tmp")
    with gzip.open(tmp, "wt") as handle:
        json.dump(manifest, handle, sort_keys=True)
    tmp.replace(args.out)
    for release, nets in manifest.items():
        for net, table in nets.items():
            total = sum(torch.Size(s).numel() for s in table.values())
            print(f"{release} {net}: {len(table)} tensors, {total:,} parameters")


if __name__ == "__main__":
    main()
