"""Loading and saving models: the released Kandinsky Video files, the Hub, and our model folders.

A model folder is the project's native format (the built-in model uses it)::

    model_index.json            manifest: format version, name, component list, text encoder, vocabulary
    config.json                 the whole ModelConfig (architecture + sampling defaults)
    keyframe_unet/              config.json + model.safetensors + null_embedding.safetensors
    interpolation_unet/         config.json + model.safetensors + null_embedding.safetensors
    movq/                       config.json + model.safetensors
    text_projection/            config.json + model.safetensors   (keys t5.0.weight, t5.1.*)
    layout_prior/               optional: config.json + model.safetensors (text-to-layout prior)
    text_encoder/               optional: a transformers T5 encoder + tokenizer saved with save_pretrained

Every file is a plain tensor container (safetensors) or JSON: loading never runs pickled code, and the
released ``.pt`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fusionframes.components import ModelComponents, build_components
from fusionframes.config import ModelConfig, preset
from fusionframes.io.atomic import atomic_write

FORMAT_NAME = "fusionframes"
FORMAT_VERSION = 1
MANIFEST = "model_index.json"

OFFICIAL_REPO = "ai-forever/KandinskyVideo"
OFFICIAL_TEXT_ENCODER = "google/flan-ul2"
OFFICIAL_FILES = {
    "keyframe": "weights/kandinsky_video.pt",
    "interpolation": "weights/kandinsky_video_interpolation.pt",
    "movq": "weights/movq.pt",
}
OFFICIAL_NAME = "kandinsky-video-1.0"
BUILTIN_NAME = "builtin"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the architecture."""


# ---------------------------------------------------------------------------------------------
# Reading tensors safely


def read_official_file(path: str | Path, what: str) -> dict:
    """``torch.load(weights_only=True)`` with errors that name the file and what it should hold."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what}: {path} is empty (0 bytes); re-download it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, not a checkpoint, pickled code refused...
        raise CheckpointError(
            f"{what}: cannot read {path} as a weights-only PyTorch checkpoint "
            f"(truncated or wrong file?): {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        ) from error


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as error:
        raise CheckpointError(
            f"{what}: cannot read {path} (truncated or not safetensors): {error}"
        ) from error


def require_keys(state: Mapping, keys: tuple[str, ...], what: str, path: str | Path) -> None:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what}: {path} holds a {type(state).__name__}, expected a dict")
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(
            f"{what}: {path} lacks key(s) {missing}; found {sorted(state)[:10]} "
            "(is this the right file for this slot?)"
        )


def defaults_for_older_checkpoints(module: nn.Module) -> dict[str, torch.Tensor]:
    """Values of parameters that files written before they existed lack, from every submodule's
    ``defaults_for_older_checkpoints()`` (each a value that keeps the older behaviour)."""
    defaults = {}
    for prefix, sub in module.named_modules():
        fill = getattr(sub, "defaults_for_older_checkpoints", None)
        if callable(fill):
            defaults.update({f"{prefix}.{k}" if prefix else k: v for k, v in fill().items()})
    return defaults


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Strict key and shape match, with a report of the missing, unexpected and mis-shaped keys (keys
    newer than the file are filled with their :func:`defaults_for_older_checkpoints`)."""
    state = {**defaults_for_older_checkpoints(module), **state}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:

        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8} more)" if len(items) > 8 else "")

        parts = [f"{what}: checkpoint does not match the architecture"]
        if missing:
            parts.append(f"{len(missing)} missing key(s): {show(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {show(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {show(shapes)}")
        raise CheckpointError("; ".join(parts))
    module.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------
# The released files


@dataclass(frozen=True)
class OfficialFiles:
    """Local paths of the released files plus the text encoder (folder or Hub id)."""

    keyframe: Path
    interpolation: Path
    movq: Path
    text_encoder: str | Path = OFFICIAL_TEXT_ENCODER


def hub_file(
    filename: str, what: str, flag: str, cache_dir: str | Path | None = None, repo: str = OFFICIAL_REPO
) -> Path:
    """Download (or find in the cache) one file of an official repo, with an actionable offline error."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, cache_dir=cache_dir))
    except Exception as error:
        raise FileNotFoundError(
            f"{what}: {repo}/{filename} is not in the local Hugging Face cache and could not be "
            f"downloaded ({type(error).__name__}). Download it when online, or pass a local path with {flag}."
        ) from error


def resolve_official_files(
    keyframe: str | Path | None = None,
    interpolation: str | Path | None = None,
    movq: str | Path | None = None,
    text_encoder: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> OfficialFiles:
    """Local paths win; anything not given comes from the Hub (or its cache)."""

    def pick(given, key: str, flag: str) -> Path:
        if given is not None:
            path = Path(given)
            if not path.is_file():
                raise FileNotFoundError(f"{flag.lstrip('-')}: file not found: {path}")
            return path
        return hub_file(OFFICIAL_FILES[key], f"{key} weights", flag, cache_dir)

    return OfficialFiles(
        keyframe=pick(keyframe, "keyframe", "--keyframe-weights (unet_path=)"),
        interpolation=pick(
            interpolation, "interpolation", "--interpolation-weights (interpolation_unet_path=)"
        ),
        movq=pick(movq, "movq", "--movq-weights (movq_path=)"),
        text_encoder=text_encoder or OFFICIAL_TEXT_ENCODER,
    )


def load_official(files: OfficialFiles, config: ModelConfig | None = None) -> ModelComponents:
    """Build the architecture on the meta device, then fill it from the released files unchanged."""
    config = config or preset(OFFICIAL_NAME)
    keyframe = read_official_file(files.keyframe, "keyframe weights")
    require_keys(keyframe, ("unet", "null_embedding", "projections"), "keyframe weights", files.keyframe)
    interpolation = read_official_file(files.interpolation, "interpolation weights")
    require_keys(interpolation, ("unet", "null_embedding"), "interpolation weights", files.interpolation)
    movq = read_official_file(files.movq, "movq weights")
    require_keys(movq, (), "movq weights", files.movq)

    components = build_components(config, files.text_encoder, name=OFFICIAL_NAME, device="meta")
    for module in components.networks().values():
        module.to_empty(device="cpu")
    load_strict(components.keyframe_unet, keyframe["unet"], "keyframe weights (unet)")
    load_strict(components.projection, keyframe["projections"], "keyframe weights (projections)")
    load_strict(components.interpolation_unet, interpolation["unet"], "interpolation weights (unet)")
    load_strict(components.movq, movq, "movq weights")
    components.keyframe_null = keyframe["null_embedding"].float()
    components.interpolation_null = interpolation["null_embedding"].float()
    return components.eval()


# ---------------------------------------------------------------------------------------------
# Model folders


def _atomic_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def _state(module: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """CPU tensors for saving; floating-point ones in ``dtype`` (loading casts back to float32)."""
    out = {}
    for key, value in module.state_dict().items():
        value = value.detach().to("cpu")
        out[key] = (value.to(dtype) if value.is_floating_point() else value).contiguous()
    return out


def write_model_folder(
    components: ModelComponents,
    path: str | Path,
    text_encoder_dir: str | Path | None = None,
    metadata: dict | None = None,
    weights_dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``components`` as a model folder, atomically (a temp folder renamed into place).

    ``weights_dtype`` float16 halves the folder (the shipped built-in model uses it to stay small).

    ``text_encoder_dir``: a local T5 folder to copy in; without it the manifest references
    ``components.text_encoder`` (e.g. a Hub id), which is how converted official models stay small.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"out: parent folder does not exist: {path.parent}")
    if (components.layout_prior is None) != (components.config.layout_prior is None):
        raise ValueError("components: layout_prior and config.layout_prior must be both set or both None")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        config = components.config
        parts = {
            "keyframe_unet": (components.keyframe_unet, config.keyframe_unet.to_dict()),
            "interpolation_unet": (components.interpolation_unet, config.interpolation_unet.to_dict()),
            "movq": (components.movq, config.movq.to_dict()),
            "text_projection": (components.projection, config.text.to_dict()),
        }
        if components.layout_prior is not None:
            parts["layout_prior"] = (components.layout_prior, components.layout_prior.config.to_dict())
        for name, (module, part_config) in parts.items():
            (tmp / name).mkdir()
            _atomic_json(tmp / name / "config.json", part_config)
            save_file(_state(module, weights_dtype), str(tmp / name / "model.safetensors"))
        save_file(
            {"null_embedding": components.keyframe_null.detach().float().cpu().contiguous()},
            str(tmp / "keyframe_unet" / "null_embedding.safetensors"),
        )
        save_file(
            {"null_embedding": components.interpolation_null.detach().float().cpu().contiguous()},
            str(tmp / "interpolation_unet" / "null_embedding.safetensors"),
        )
        if text_encoder_dir is not None:
            shutil.copytree(text_encoder_dir, tmp / "text_encoder")
            encoder_ref = "text_encoder"
        else:
            encoder_ref = str(components.text_encoder)
        _atomic_json(tmp / "config.json", config.to_dict())
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": components.name,
            "components": sorted(parts),
            "text_encoder": encoder_ref,
            "vocabulary": sorted(components.vocabulary),
            **(metadata or {}),
        }
        _atomic_json(tmp / MANIFEST, manifest)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"model: {path} is not a model folder (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"model: {manifest_path} is not a {FORMAT_NAME} v{FORMAT_VERSION} manifest "
            f"(format={manifest.get('format')!r}, version={manifest.get('format_version')!r})"
        )
    return manifest


def read_folder_config(path: str | Path) -> ModelConfig:
    """The architecture and defaults of a model folder, without touching any weights (cheap)."""
    return ModelConfig.from_dict(json.loads((Path(path) / "config.json").read_text()))


def text_encoder_source(path: str | Path, manifest: dict) -> str | Path:
    ref = manifest["text_encoder"]
    local = Path(path) / ref
    return local if local.is_dir() else ref


def load_model_folder(path: str | Path) -> ModelComponents:
    """Load a model folder written by :func:`write_model_folder` (strict, float32, CPU)."""
    path = Path(path)
    manifest = read_manifest(path)
    config = read_folder_config(path)
    components = build_components(config, text_encoder_source(path, manifest), manifest["name"], "meta")
    for name, module in components.networks().items():
        module.to_empty(device="cpu")
        load_strict(module, read_safetensors(path / name / "model.safetensors", name), f"{path.name}/{name}")
    for name in ("keyframe_unet", "interpolation_unet"):
        null = read_safetensors(path / name / "null_embedding.safetensors", f"{name} null embedding")
        setattr(components, name.replace("_unet", "_null"), null["null_embedding"].float())
    components.vocabulary = frozenset(manifest.get("vocabulary", []))
    return components.eval()


# ---------------------------------------------------------------------------------------------
# Names users type


def builtin_available() -> bool:
    return (BUILTIN_DIR / MANIFEST).is_file()


def model_config_for(model: str | Path | None) -> ModelConfig:
    """The config of a named model or folder without loading weights (used to validate requests)."""
    source = resolve_model_source(model)
    if source == OFFICIAL_NAME:
        return preset(OFFICIAL_NAME)
    return read_folder_config(source)


def resolve_model_source(model: str | Path | None) -> str | Path:
    """``None``/"builtin" -> the shipped folder; "kandinsky-video-1.0" -> the Hub; else a folder."""
    if model is None or str(model) == BUILTIN_NAME:
        if not builtin_available():
            raise FileNotFoundError(
                "model: the built-in model is not installed with this copy of fusionframes; "
                f"pass --model DIR (a model folder) or --model {OFFICIAL_NAME}"
            )
        return BUILTIN_DIR
    if str(model) == OFFICIAL_NAME:
        return OFFICIAL_NAME
    path = Path(model)
    if path.is_dir() and (path / MANIFEST).is_file():
        return path
    if path.is_dir():
        raise FileNotFoundError(
            f"model: {path} has no {MANIFEST}; convert official files with `fusionframes convert`"
        )
    raise FileNotFoundError(
        f"model: {model!r} is neither a model folder nor a known name; allowed: {BUILTIN_NAME}, "
        f"{OFFICIAL_NAME}, or a folder with {MANIFEST}"
    )


def load_model(model: str | Path | None = None, cache_dir: str | Path | None = None) -> ModelComponents:
    source = resolve_model_source(model)
    if source == OFFICIAL_NAME:
        return load_official(resolve_official_files(cache_dir=cache_dir))
    return load_model_folder(source)


def list_models() -> list[dict]:
    """What ``fusionframes models`` shows: each usable model and where it comes from."""
    rows = []
    if builtin_available():
        manifest = read_manifest(BUILTIN_DIR)
        rows.append(
            {
                "name": BUILTIN_NAME,
                "source": str(BUILTIN_DIR),
                "available": True,
                "description": manifest.get("description", ""),
                "vocabulary": manifest.get("vocabulary", []),
                "parameters": manifest.get("parameters"),
                "size_bytes": sum(f.stat().st_size for f in BUILTIN_DIR.rglob("*") if f.is_file()),
            }
        )
    rows.append(
        {
            "name": OFFICIAL_NAME,
            "source": f"https://huggingface.co/{OFFICIAL_REPO} + {OFFICIAL_TEXT_ENCODER}",
            "available": _official_cached(),
            "description": "Kandinsky Video 1.0 (released weights; downloads ~20 GB + Flan-UL2 on first use)",
        }
    )
    return rows


def _official_cached() -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return all(isinstance(try_to_load_from_cache(OFFICIAL_REPO, f), str) for f in OFFICIAL_FILES.values())
    except Exception:
        return False
