"""Join separately trained stages into one model folder.

The keyframe and interpolation stages train in parallel from the same MoVQ stage: the interpolation
U-Net sees only the null text, so it does not need the keyframe stage's text encoder. A decoder-only
MoVQ fine-tune may run alongside them. This takes the text encoder, projection, keyframe U-Net and MoVQ
from the keyframe run (or the MoVQ from the fine-tune), the interpolation U-Net and its null embedding
from the interpolation run, and the sampling defaults the caller chose.
"""

from __future__ import annotations

import dataclasses
import math
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
            total += sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())
    return total


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
    plain = [dataclasses.replace(c.config.interpolation_unet, trained_with=None) for c in (key, interp)]
    if plain[0] != plain[1]:
        raise ValueError("interpolation: its U-Net config differs from the keyframe model folder's")
    # from_dict names unknown keys and checks the types of the overrides
    # each network brings how it was trained (its trained_with); ``sampling`` overrides the defaults
    defaults = SamplingDefaults.from_dict({**key.config.sampling.to_dict(), **(sampling or {})})
    key.config = dataclasses.replace(
        key.config, interpolation_unet=interp.config.interpolation_unet, sampling=defaults
    )
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
    text_dir = Path(str(text_encoder_source(keyframes, manifest)))
    local_text = text_dir if text_dir.is_dir() else None  # else a Hub id the manifest keeps
    extra = {k: v for k, v in manifest.items() if k.startswith("trained_")}
    networks = sum(p.numel() for m in key.networks().values() for p in m.parameters())
    extra["parameters"] = networks + (text_encoder_parameters(local_text) if local_text else 0)
    return write_model_folder(
        key,
        out,
        text_encoder_dir=local_text,
        metadata={**extra, **(metadata or {})},
        weights_dtype=weights_dtype,
    )
