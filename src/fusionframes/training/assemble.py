"""Join separately trained stages into one model folder.

The keyframe and interpolation stages train in parallel from the same MoVQ stage (the interpolation
U-Net sees only the null text, so it does not need the keyframe stage's text encoder). This takes the
text encoder, projection, keyframe U-Net and MoVQ from the keyframe run, the interpolation U-Net and its
null embedding from the interpolation run, and the sampling defaults the caller chose.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from fusionframes.config import SamplingDefaults
from fusionframes.io.checkpoints import (
    load_model_folder,
    read_manifest,
    text_encoder_source,
    write_model_folder,
)


def text_encoder_parameters(folder: Path) -> int:
    """Parameters in a T5 folder's safetensors files (without loading the model)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as handle:
            for name in handle.keys():
                total += _numel(handle, name)
    return total


def _numel(handle, name: str) -> int:
    count = 1
    for size in handle.get_slice(name).get_shape():
        count *= size
    return count


def _same_movq(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def assemble_model(
    keyframes: str | Path,
    interpolation: str | Path,
    out: str | Path,
    name: str,
    sampling: dict[str, Any] | None = None,
    weights_dtype: torch.dtype = torch.float32,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``out`` from the two stage folders; both must have been trained on the same MoVQ."""
    key = load_model_folder(keyframes)
    interp = load_model_folder(interpolation)
    if not _same_movq(key.movq, interp.movq):
        raise ValueError(
            "interpolation: its MoVQ differs from the keyframe model's; train both stages from the same "
            "MoVQ model folder (init_from)"
        )
    if key.config.interpolation_unet != interp.config.interpolation_unet:
        raise ValueError("interpolation: its U-Net config differs from the keyframe model folder's")
    # from_dict names unknown keys and checks the types of the overrides
    defaults = SamplingDefaults.from_dict({**key.config.sampling.to_dict(), **(sampling or {})})
    key.config = dataclasses.replace(key.config, sampling=defaults)
    key.interpolation_unet = interp.interpolation_unet
    key.interpolation_null = interp.interpolation_null
    key.vocabulary = frozenset(key.vocabulary) | frozenset(interp.vocabulary)
    key.name = name
    manifest = read_manifest(Path(keyframes))
    text_dir = text_encoder_source(keyframes, manifest)
    extra = {k: v for k, v in manifest.items() if k.startswith("trained_")}
    networks = sum(p.numel() for m in key.networks().values() for p in m.parameters())
    text = text_encoder_parameters(Path(str(text_dir))) if Path(str(text_dir)).is_dir() else 0
    extra["parameters"] = networks + text
    return write_model_folder(
        key,
        out,
        text_encoder_dir=text_dir if Path(str(text_dir)).is_dir() else None,
        metadata={**extra, **(metadata or {})},
        weights_dtype=weights_dtype,
    )
