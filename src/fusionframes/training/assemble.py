"""Join separately trained stages into one model folder.

The keyframe and interpolation stages train in parallel from the same MoVQ stage (and, optionally, a
decoder-only MoVQ fine-tune alongside them) (the interpolation
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


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, prefixes: tuple[str, ...] = ("",)) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if k.startswith(prefixes)]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in keys)


def assemble_model(
    keyframes: str | Path,
    interpolation: str | Path,
    out: str | Path,
    name: str,
    sampling: dict[str, Any] | None = None,
    weights_dtype: torch.dtype = torch.float32,
    metadata: dict[str, Any] | None = None,
    movq: str | Path | None = None,
) -> Path:
    """Write ``out`` from the two stage folders; both must have been trained on the same MoVQ encoder.

    ``movq``: take the MoVQ from this folder instead, e.g. a decoder fine-tuned with ``freeze_encoder``
    while the diffusion stages trained (its encoder must be the one they trained on).
    """
    key = load_model_folder(keyframes)
    interp = load_model_folder(interpolation)
    if not _same_weights(key.movq, interp.movq, ("encoder.", "quant_conv.")):
        raise ValueError(
            "interpolation: its MoVQ differs from the keyframe model's; train both stages from the same "
            "MoVQ model folder (init_from)"
        )
    if key.config.interpolation_unet != interp.config.interpolation_unet:
        raise ValueError("interpolation: its U-Net config differs from the keyframe model folder's")
    # from_dict names unknown keys and checks the types of the overrides
    defaults = SamplingDefaults.from_dict({**key.config.sampling.to_dict(), **(sampling or {})})
    key.config = dataclasses.replace(key.config, sampling=defaults)
    if movq is not None:
        tuned = load_model_folder(movq).movq
        if not _same_weights(key.movq, tuned, ("encoder.", "quant_conv.")):
            raise ValueError(
                "movq: its encoder differs from the one the keyframe model was trained on; fine-tune "
                "the decoder only (freeze_encoder: true)"
            )
        key.movq = tuned
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
