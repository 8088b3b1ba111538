"""Kandinsky Video 1.1's released files: config translation, strict loading, Hub download.

The release (``ai-forever/KandinskyVideo_1_1``) holds::

    configs.json        {"t2v": {"configs": {...}}, "interpolation": {...}, "image_movq": {...},
                         "video_movq": {...}, "text_encoder": {...flat...}}
    t2v.pt              {"unet": state dict, "null_embedding": [context_dim]}   keyframe + first frame
    interpolation.pt    {"unet": state dict, "null_embedding": [context_dim]}
    movq.pt             state dict of the image MoVQ (encoder, quant convs, decoder)
    video_movq.pt       state dict of the MoVQ with the temporal decoder
    t5_projections.pt   {"projection_base": {"0.weight", "1.weight", "1.bias"},
                         "projection_interpolation": {...the same keys}}

Everything is read with ``torch.load(weights_only=True)`` and loaded with a strict key and shape match;
``configs.json`` gives the sizes when present, the ``kandinsky-video-1.1`` preset otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fusionframes.components import ModelComponents, build_components
from fusionframes.config import ModelConfig, MoVQConfig, TextConfig, UNetConfig, preset
from fusionframes.io.checkpoints import CheckpointError, load_strict, read_official_file, require_keys

logger = logging.getLogger(__name__)

NAME = "kandinsky-video-1.1"
REPO = "ai-forever/KandinskyVideo_1_1"
TEXT_ENCODER = "google/flan-ul2"
FILES = {
    "t2v": "t2v.pt",
    "interpolation": "interpolation.pt",
    "movq": "movq.pt",
    "video_movq": "video_movq.pt",
    "t5_projections": "t5_projections.pt",
}
CONFIGS_FILE = "configs.json"
FOLDER_HINT = "--model DIR (a folder written by `fusionframes convert --release 1.1`)"
KEYFRAMES = 12  # the 1.1 pipeline's keyframe count (its U-Net takes any)

# Constructor arguments of the official networks we build as they are, per config section.
_UNET_KEYS = {
    "model_channels", "init_channels", "num_channels", "out_channels", "time_embed_dim", "context_dim",
    "groups", "head_dim", "expansion_ratio", "compression_ratio", "dim_mult", "num_blocks",
    "add_cross_attention", "add_self_attention",
}  # fmt: skip
_T2V_KEYS = _UNET_KEYS | {"noise_augmentation", "motion_score"}
_INTERPOLATION_KEYS = _UNET_KEYS | {
    "add_temporal_attention", "add_new_temporal_params", "merge_perturbation_time_with_context",
}  # fmt: skip
# Official switches we support only at their default (the release uses them so); anything else is refused.
_INTERPOLATION_FIXED = {
    "time_downsample": lambda v: not any(v),
    "temporal": lambda v: v is True,
    "use_perturbation_time_embed": lambda v: v is True,
    "merge_perturbation_time_with_diffusion_time": lambda v: v is True,
    "pass_skip_frames": lambda v: v is True,
    "temporal_type": lambda v: True,  # read by nothing in the official forward
}
_MOVQ_KEYS = {
    "ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels", "in_channels", "out_ch",
    "resolution", "dropout", "double_z", "temporal", "temporal_attention_block", "temporal_kernel_size",
    "temporal_conv_padding", "temporal_mid_blocks",
}  # fmt: skip
_MOVQ_FIXED = {
    "resamp_with_conv": lambda v: v is True,
    "give_pre_end": lambda v: v is False,
    "add_conv": lambda v: v is False,
    "build_3D_decoder": lambda v: v is False,
    "temporal_blocks": lambda v: v is False,
    "flicker_augmentation": lambda v: v is False,
}


def _section(configs: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The constructor arguments of one section (``{"configs": {...}}`` in the hub file, or flat)."""
    part = configs.get(name)
    if not isinstance(part, Mapping):
        raise CheckpointError(f"configs.json: no {name!r} section; found {sorted(configs)}")
    inner = part.get("configs", part)
    if not isinstance(inner, Mapping):
        raise CheckpointError(f"configs.json: {name}.configs must be an object, got {type(inner).__name__}")
    return dict(inner)


def _split(values: dict[str, Any], known: set[str], fixed: dict, what: str) -> dict[str, Any]:
    """Keep the arguments we build; refuse a non-default value of a switch we do not implement."""
    out = {}
    for key, value in values.items():
        if key in known:
            out[key] = tuple(value) if isinstance(value, list) else value
        elif key in fixed:
            if not fixed[key](value):
                raise CheckpointError(
                    f"configs.json: {what}.{key}={value!r} is not supported (only the official default)"
                )
        else:
            # The official constructors swallow unknown keys (**kwargs) or would fail; either way they
            # do not shape the network, so they are reported and left out.
            logger.warning("configs.json: %s.%s is not a constructor argument we know; ignored", what, key)
    return out


def keyframe_unet_config(values: Mapping[str, Any], num_frames: int = KEYFRAMES) -> UNetConfig:
    """The 1.1 keyframe / first-frame U-Net (``configs.json`` section ``t2v``)."""
    args = _split(dict(values), _T2V_KEYS, {}, "t2v")
    args.setdefault("out_channels", args.get("num_channels", 3))  # official: out_channels or num_channels
    args.setdefault("num_channels", 3)
    args.setdefault("init_channels", None)
    return UNetConfig(num_frames=num_frames, temporal_layers="1.1", image_in_layer=True, **args)


def interpolation_unet_config(values: Mapping[str, Any]) -> UNetConfig:
    """The 1.1 interpolation U-Net (section ``interpolation``)."""
    args = _split(dict(values), _INTERPOLATION_KEYS, _INTERPOLATION_FIXED, "interpolation")
    args.setdefault("out_channels", 3)  # the official default
    args.setdefault("num_channels", 3)
    args.setdefault("init_channels", None)
    return UNetConfig(interpolation=True, temporal_layers="1.1", **args)


def movq_config(values: Mapping[str, Any], what: str = "image_movq") -> MoVQConfig:
    """A 1.1 MoVQ (sections ``image_movq`` and ``video_movq``): 32 norm groups, first-row attention."""
    args = _split(dict(values), _MOVQ_KEYS, _MOVQ_FIXED, what)
    return MoVQConfig(norm_groups=32, first_row_attention_norm=True, **args)


def text_config(values: Mapping[str, Any], encoder_dim: int) -> TextConfig:
    """Section ``text_encoder`` (flat): context width and token count; the encoder width comes from T5."""
    return TextConfig(
        encoder_dim=encoder_dim,
        context_dim=int(values.get("context_dim", 4096)),
        max_length=int(values.get("tokens_length", 128)),
        interpolation_projection=True,
    )


def model_config(configs: Mapping[str, Any] | None = None) -> ModelConfig:
    """The whole 1.1 model from ``configs.json`` (a missing section keeps the preset's)."""
    base = preset(NAME)
    if configs is None:
        return base
    parts: dict[str, Any] = {}
    if "t2v" in configs:
        parts["keyframe_unet"] = keyframe_unet_config(_section(configs, "t2v"))
    if "interpolation" in configs:
        parts["interpolation_unet"] = interpolation_unet_config(_section(configs, "interpolation"))
    if "image_movq" in configs:
        parts["movq"] = movq_config(_section(configs, "image_movq"), "image_movq")
    if "video_movq" in configs:
        parts["video_movq"] = movq_config(_section(configs, "video_movq"), "video_movq")
    if "text_encoder" in configs:
        parts["text"] = text_config(_section(configs, "text_encoder"), base.text.encoder_dim)
    return dataclasses.replace(base, **parts)


def read_configs(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configs: file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"configs: cannot read {path} as JSON: {error}") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"configs: {path} holds a {type(data).__name__}, expected an object")
    return data


# ---------------------------------------------------------------------------------------------
# Weights


def projection_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A released projection (``0.weight``, ``1.*``: Linear + LayerNorm) under TextProjection's keys."""
    return {f"t5.{key}": value for key, value in state.items()}


def read_unet_file(path: str | Path, what: str) -> dict:
    data = read_official_file(path, what)
    require_keys(data, ("unet", "null_embedding"), what, path)
    return data


def read_projections(path: str | Path) -> dict:
    data = read_official_file(path, "t5 projections")
    require_keys(data, ("projection_base", "projection_interpolation"), "t5 projections", path)
    return data


@dataclass(frozen=True)
class ReleaseFiles:
    """Local paths of the five released weight files, the optional configs.json and the text encoder."""

    t2v: Path
    interpolation: Path
    movq: Path
    video_movq: Path
    t5_projections: Path
    configs: Path | None = None
    text_encoder: str | Path = TEXT_ENCODER

    @classmethod
    def from_folder(cls, folder: str | Path, text_encoder: str | Path = TEXT_ENCODER) -> ReleaseFiles:
        """The official file names inside one folder (a download of the hub repo)."""
        folder = Path(folder)
        paths = {key: folder / name for key, name in FILES.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"release: {folder} lacks {missing}; expected {sorted(FILES.values())}")
        configs = folder / CONFIGS_FILE
        return cls(**paths, configs=configs if configs.is_file() else None, text_encoder=text_encoder)


def is_release_folder(path: str | Path | None) -> bool:
    """A folder holding the released file names (a download of the hub repo), not converted."""
    return path is not None and Path(path).is_dir() and (Path(path) / FILES["t2v"]).is_file()


def load_release_folder(folder: str | Path, text_encoder: str | Path | None = None) -> ModelComponents:
    """The released files in ``folder``; the text encoder is ``text_encoder``, else a ``text_encoder/``
    T5 folder next to the files, else the release's ``google/flan-ul2``."""
    folder = Path(folder)
    if text_encoder is None:
        text_encoder = folder / "text_encoder" if (folder / "text_encoder").is_dir() else TEXT_ENCODER
    return load_release(ReleaseFiles.from_folder(folder, text_encoder))


def release_folder_config(folder: str | Path) -> ModelConfig:
    """The architecture of a folder of released files: its ``configs.json``, else the preset."""
    configs = Path(folder) / CONFIGS_FILE
    return model_config(read_configs(configs) if configs.is_file() else None)


def load_release_or_folder(
    model: str | Path | None, cache_dir: str | Path | None = None, text_encoder: str | Path | None = None
) -> ModelComponents:
    """Any model :func:`~fusionframes.io.checkpoints.load_model` takes, with ``text_encoder`` (a T5
    folder or Hub id) replacing the model's own: ``kandinsky-video-1.1`` from the Hub, a folder of
    released files (:func:`load_release_folder`), or a model folder / name."""
    from fusionframes.io.checkpoints import load_model

    if str(model) == NAME:
        return load_release(hub_files(cache_dir, text_encoder or TEXT_ENCODER))
    if is_release_folder(model):
        return load_release_folder(model, text_encoder)
    components = load_model(model, cache_dir=cache_dir)
    if text_encoder is not None:
        components.text_encoder = text_encoder
    return components


def hub_files(cache_dir: str | Path | None = None, text_encoder: str | Path = TEXT_ENCODER) -> ReleaseFiles:
    """Download (or find in the Hugging Face cache) the release, with the 1.0 loader's offline errors."""
    from fusionframes.io.checkpoints import hub_file

    paths = {
        key: hub_file(name, f"{key} weights", FOLDER_HINT, cache_dir, REPO) for key, name in FILES.items()
    }
    try:
        configs = hub_file(CONFIGS_FILE, "configs", FOLDER_HINT, cache_dir, REPO)
    except FileNotFoundError:
        configs = None  # the sizes then come from the preset
    return ReleaseFiles(**paths, configs=configs, text_encoder=text_encoder)


def load_release(files: ReleaseFiles, config: ModelConfig | None = None) -> ModelComponents:
    """Build the 1.1 networks on the meta device and fill them from the released files, strictly."""
    if config is None:
        config = model_config(read_configs(files.configs) if files.configs is not None else None)
    t2v = read_unet_file(files.t2v, "t2v weights")
    interpolation = read_unet_file(files.interpolation, "interpolation weights")
    movq = read_official_file(files.movq, "movq weights")
    video_movq = read_official_file(files.video_movq, "video_movq weights")
    projections = read_projections(files.t5_projections)
    encoder_dim = projections["projection_base"]["0.weight"].shape[1]
    if encoder_dim != config.text.encoder_dim:  # the T5 width is not in configs.json: the file says it
        config = dataclasses.replace(config, text=dataclasses.replace(config.text, encoder_dim=encoder_dim))

    components = build_components(config, files.text_encoder, name=NAME, device="meta")
    for module in components.networks().values():
        module.to_empty(device="cpu")
    load_strict(components.keyframe_unet, t2v["unet"], "t2v weights (unet)")
    load_strict(components.interpolation_unet, interpolation["unet"], "interpolation weights (unet)")
    load_strict(components.movq, movq, "movq weights")
    load_strict(components.video_movq, video_movq, "video_movq weights")
    load_strict(components.projection, projection_state(projections["projection_base"]), "projection_base")
    load_strict(
        components.interpolation_projection,
        projection_state(projections["projection_interpolation"]),
        "projection_interpolation",
    )
    components.keyframe_null = t2v["null_embedding"].float()
    components.interpolation_null = interpolation["null_embedding"].float()
    return components.eval()


# ---------------------------------------------------------------------------------------------
# What the model list and request validation see without downloading


def _cached(filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(REPO, filename)
    except Exception:
        return None
    return Path(found) if isinstance(found, str) else None


def cached_model_config() -> ModelConfig:
    """The 1.1 architecture from a cached ``configs.json`` if there is one, else the preset (no network)."""
    path = _cached(CONFIGS_FILE)
    return model_config(read_configs(path)) if path is not None else preset(NAME)


def model_row() -> dict:
    """The ``fusionframes models`` row of the 1.1 release."""
    return {
        "name": NAME,
        "source": f"https://huggingface.co/{REPO} + {TEXT_ENCODER}",
        "available": all(_cached(name) is not None for name in FILES.values()),
        "description": "Kandinsky Video 1.1 (released weights: image-to-video, motion levels, temporal "
        "MoVQ decoder; downloads the five weight files + Flan-UL2 on first use)",
    }
