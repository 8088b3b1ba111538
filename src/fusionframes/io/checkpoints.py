"""Loading and saving models: the released Kandinsky Video files, the Hub, and our model folders.

A model folder is the project's native format (the built-in model uses it)::

    model_index.json            manifest: format version, name, component list, text encoder, vocabulary
    config.json                 what belongs to no single component (the sampling defaults)
    keyframe_unet/              config.json + model.safetensors + null_embedding.safetensors
    interpolation_unet/         config.json + model.safetensors + null_embedding.safetensors
    movq/                       config.json + model.safetensors
    text_projection/            config.json + model.safetensors   (keys t5.0.weight, t5.1.*)
    layout_prior/               optional: config.json + model.safetensors (text-to-layout prior)
    text_encoder/               optional: a transformers T5 encoder + tokenizer saved with save_pretrained

One source of truth, as diffusers' ``subfolder`` loading: a component is built from its own folder's
``config.json`` and nothing else. Loading is strict: each ``model.safetensors`` records the config it was
written with (safetensors metadata), and a ``config.json`` that disagrees with it fails, naming the
component and the field; then every key and shape must match (no key is filled in). Every file is a
plain tensor container (safetensors) or JSON: loading never runs pickled code, and the released ``.pt``
files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from fusionframes.components import ModelComponents, build_components
from fusionframes.config import (
    RETIRED_FIELDS,
    LayoutPriorConfig,
    ModelConfig,
    MoVQConfig,
    TextConfig,
    UNetConfig,
    preset,
)
from fusionframes.io.atomic import atomic_write, temp_sibling
from fusionframes.io.weights import (
    CheckpointError,
    load_strict,
    read_json,
    read_official_file,
    read_safetensors,
    read_safetensors_with_metadata,
    require_keys,
)

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
RELEASE_11_NAME = "kandinsky-video-1.1"  # loaded by fusionframes.io.official_kv11
BUILTIN_NAME = "builtin"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin"
ROOT_CONFIG = "config.json"
WEIGHTS = "model.safetensors"
# Component folder -> (its field of ModelConfig, the config class its config.json holds).
COMPONENT_CONFIGS: dict[str, tuple[str, type]] = {
    "keyframe_unet": ("keyframe_unet", UNetConfig),
    "interpolation_unet": ("interpolation_unet", UNetConfig),
    "movq": ("movq", MoVQConfig),
    "text_projection": ("text", TextConfig),
    "layout_prior": ("layout_prior", LayoutPriorConfig),
    "video_movq": ("video_movq", MoVQConfig),
    "image_keyframe_unet": ("image_keyframe_unet", UNetConfig),
    "interpolation_text_projection": ("text", TextConfig),  # 1.1: a second projection, same TextConfig
}
REQUIRED_COMPONENTS = ("interpolation_unet", "keyframe_unet", "movq", "text_projection")
# The safetensors metadata key under which a component's weights record the config.json they fit.
CONFIG_METADATA_KEY = "fusionframes.config"


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
    """Build the architecture on the meta device, then fill it from the released files unchanged.

    One file at a time: its tensors become the networks' weights (float32, by assignment) and the file's
    dict is dropped before the next file is read, so the peak is the weights plus the largest file's
    tensors that are still being cast, not all three files plus a second copy.
    """
    config = config or preset(OFFICIAL_NAME)
    for path, what in (
        (files.keyframe, "keyframe"),
        (files.interpolation, "interpolation"),
        (files.movq, "movq"),
    ):
        if not Path(path).is_file():  # fail before reading gigabytes of the other files
            raise FileNotFoundError(f"{what} weights: file not found: {path}")
    components = build_components(config, files.text_encoder, name=OFFICIAL_NAME, device="meta")
    keyframe = read_official_file(files.keyframe, "keyframe weights")
    require_keys(keyframe, ("unet", "null_embedding", "projections"), "keyframe weights", files.keyframe)
    load_strict(components.keyframe_unet, keyframe["unet"], "keyframe weights (unet)", torch.float32)
    load_strict(
        components.projection, keyframe["projections"], "keyframe weights (projections)", torch.float32
    )
    components.keyframe_null = keyframe["null_embedding"].float()
    del keyframe
    interpolation = read_official_file(files.interpolation, "interpolation weights")
    require_keys(interpolation, ("unet", "null_embedding"), "interpolation weights", files.interpolation)
    load_strict(
        components.interpolation_unet, interpolation["unet"], "interpolation weights (unet)", torch.float32
    )
    components.interpolation_null = interpolation["null_embedding"].float()
    del interpolation
    movq = read_official_file(files.movq, "movq weights")
    require_keys(movq, (), "movq weights", files.movq)
    load_strict(components.movq, movq, "movq weights", torch.float32)
    del movq
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
    if (components.video_movq is None) != (components.config.video_movq is None):
        raise ValueError("components: video_movq and config.video_movq must be both set or both None")
    tmp = temp_sibling(path)
    tmp.mkdir()
    try:
        config = components.config
        parts = components.networks()
        config_dicts = component_config_dicts(config)
        for name, module in parts.items():
            (tmp / name).mkdir()
            _atomic_json(tmp / name / ROOT_CONFIG, config_dicts[name])
            written_with = {CONFIG_METADATA_KEY: json.dumps(config_dicts[name], sort_keys=True)}
            save_file(_state(module, weights_dtype), str(tmp / name / WEIGHTS), metadata=written_with)
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
        _atomic_json(tmp / ROOT_CONFIG, root_config_dict(config))
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


def component_config_dicts(config: ModelConfig) -> dict[str, dict]:
    """Folder name -> the ``config.json`` of that component (only the components ``config`` has)."""
    whole = config.to_dict()
    return {name: whole[key] for name, (key, _) in COMPONENT_CONFIGS.items() if whole.get(key) is not None}


def root_config_dict(config: ModelConfig) -> dict:
    """The root ``config.json``: what belongs to no component folder."""
    own = {key for key, _ in COMPONENT_CONFIGS.values()}
    return {key: value for key, value in config.to_dict().items() if key not in own}


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise FileNotFoundError(f"model: {path} is not a model folder (no {MANIFEST})")
    manifest = read_json(path / MANIFEST, "model")
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"model: {path / MANIFEST} is not a {FORMAT_NAME} v{FORMAT_VERSION} manifest "
            f"(format={manifest.get('format')!r}, version={manifest.get('format_version')!r})"
        )
    names = manifest.get("components")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"model: {path / MANIFEST}: 'components' must be a list of folder names")
    unknown = sorted(set(names) - set(COMPONENT_CONFIGS))
    missing = sorted(set(REQUIRED_COMPONENTS) - set(names))
    if unknown or missing:
        raise CheckpointError(
            f"model: {path / MANIFEST}: components {'unknown ' + str(unknown) if unknown else ''}"
            f"{'; ' if unknown and missing else ''}{'missing ' + str(missing) if missing else ''}; "
            f"allowed: {sorted(COMPONENT_CONFIGS)}"
        )
    if not isinstance(manifest.get("text_encoder"), str):
        raise CheckpointError(f"model: {path / MANIFEST}: 'text_encoder' must be a folder name or a Hub id")
    return manifest


def _first_difference(a: dict, b: dict) -> str:
    key = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[0]
    return f"{key} ({a.get(key)!r} vs {b.get(key)!r})"


def read_component_configs(path: Path, manifest: dict) -> dict[str, dict]:
    """Folder name -> its ``config.json``, each checked by its config class (errors name the folder)."""
    out = {}
    for name in manifest["components"]:
        data = read_json(path / name / ROOT_CONFIG, name)
        try:
            COMPONENT_CONFIGS[name][1].from_dict(data)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{name}: {path / name / ROOT_CONFIG}: {error}") from None
        out[name] = data
    return out


def read_folder_config(path: str | Path) -> ModelConfig:
    """The architecture and defaults of a model folder, without touching any weights (cheap): each
    component from its own ``config.json``, the rest from the root one."""
    path = Path(path)
    manifest = read_manifest(path)
    root = read_json(path / ROOT_CONFIG, "model")
    fields: dict[str, tuple[str, dict]] = {}  # ModelConfig field -> (first folder giving it, its config)
    for name, data in read_component_configs(path, manifest).items():
        key = COMPONENT_CONFIGS[name][0]
        if key in root and root[key] != data:  # folders written before: the root repeated every component
            raise CheckpointError(
                f"{name}: {path / name / ROOT_CONFIG} and {path / ROOT_CONFIG} disagree on "
                f"{_first_difference(data, root[key])}; the component's own config.json loads it"
            )
        if key in fields and fields[key][1] != data:  # two folders of one config (the text projections)
            raise CheckpointError(
                f"{name}: {path / name / ROOT_CONFIG} and {path / fields[key][0] / ROOT_CONFIG} disagree on "
                f"{_first_difference(data, fields[key][1])}"
            )
        fields.setdefault(key, (name, data))
    own = {key for key, _ in COMPONENT_CONFIGS.values()}
    rest = {key: value for key, value in root.items() if key not in own}
    try:
        return ModelConfig.from_dict({**rest, **{key: data for key, (_, data) in fields.items()}})
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"model: {path / ROOT_CONFIG}: {error}") from None


def text_encoder_source(path: str | Path, manifest: dict) -> str | Path:
    """The model's own text encoder folder, or the Hub id (or absolute folder) the manifest names."""
    from fusionframes.text.conditioning import check_t5_folder

    ref = manifest["text_encoder"]
    local = Path(path) / ref
    if local.is_dir():
        return check_t5_folder(local)
    if ref == "text_encoder":  # what write_model_folder names a copied-in encoder: it must be there
        raise FileNotFoundError(f"text_encoder: {local} not found (the manifest says the model has one)")
    if Path(ref).is_absolute():
        return check_t5_folder(Path(ref))
    return ref


def check_weights_match_config(name: str, config: dict, written_with: dict[str, str], file: Path) -> None:
    """The config a component's weights were written with must be its ``config.json`` (field by field).

    A removed setting (``RETIRED_FIELDS``) recorded at its one no-op value may be absent from the
    ``config.json``: weights written before its removal stay loadable without being rewritten."""
    if CONFIG_METADATA_KEY not in written_with:
        return  # written before weights recorded it: the strict key and shape match still applies
    recorded = json.loads(written_with[CONFIG_METADATA_KEY])
    retired = {k: v for fields_ in RETIRED_FIELDS.values() for k, v in fields_.items()}
    for key in sorted(recorded):
        if key not in config and key in retired and recorded[key] == retired[key]:
            continue
        if key not in config or config[key] != recorded[key]:
            raise CheckpointError(
                f"{name}: config.json field {key!r} is {config.get(key, '(missing)')!r} but {file.name} was "
                f"written with {recorded[key]!r}; fix {name}/config.json"
            )


def load_model_folder(path: str | Path) -> ModelComponents:
    """Load a model folder written by :func:`write_model_folder` (strict, float32, CPU)."""
    path = Path(path)
    manifest = read_manifest(path)
    config = read_folder_config(path)
    config_dicts = read_component_configs(path, manifest)
    components = build_components(config, text_encoder_source(path, manifest), manifest["name"], "meta")
    for name, module in components.networks().items():
        file = path / name / WEIGHTS
        state, written_with = read_safetensors_with_metadata(file, name)
        check_weights_match_config(name, config_dicts[name], written_with, file)
        load_strict(module, state, f"{name} ({name}/{ROOT_CONFIG} vs {name}/{WEIGHTS})", torch.float32)
        del state
    for name in ("keyframe_unet", "interpolation_unet"):
        null = read_safetensors(path / name / "null_embedding.safetensors", f"{name} null embedding")
        if "null_embedding" not in null:
            raise CheckpointError(f"{name}: {name}/null_embedding.safetensors lacks the key 'null_embedding'")
        expected = getattr(components, name.replace("_unet", "_null")).shape
        if tuple(null["null_embedding"].shape) != tuple(expected):
            raise CheckpointError(
                f"{name}: null_embedding.safetensors holds shape {tuple(null['null_embedding'].shape)}, "
                f"config.json context_dim needs {tuple(expected)}"
            )
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
    from fusionframes.io import official_kv11

    if source == RELEASE_11_NAME:
        return official_kv11.cached_model_config()
    if official_kv11.is_release_folder(source):
        return official_kv11.release_folder_config(source)
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
    if str(model) in (OFFICIAL_NAME, RELEASE_11_NAME):
        return str(model)
    from fusionframes.io.official_kv11 import is_release_folder

    path = Path(model)
    if path.is_dir() and ((path / MANIFEST).is_file() or is_release_folder(path)):
        return path  # a model folder, or a folder of Kandinsky Video 1.1's released files
    if path.is_dir():
        raise FileNotFoundError(
            f"model: {path} has no {MANIFEST}; convert official files with `fusionframes convert`"
        )
    raise FileNotFoundError(
        f"model: {model!r} is neither a model folder nor a known name; allowed: {BUILTIN_NAME}, "
        f"{OFFICIAL_NAME}, {RELEASE_11_NAME}, or a folder with {MANIFEST}"
    )


def load_model(model: str | Path | None = None, cache_dir: str | Path | None = None) -> ModelComponents:
    source = resolve_model_source(model)
    if source == OFFICIAL_NAME:
        return load_official(resolve_official_files(cache_dir=cache_dir))
    from fusionframes.io import official_kv11

    if source == RELEASE_11_NAME:
        return official_kv11.load_release(official_kv11.hub_files(cache_dir))
    if official_kv11.is_release_folder(source):
        return official_kv11.load_release_folder(source)
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
    from fusionframes.io import official_kv11

    rows.append(official_kv11.model_row())
    return rows


def _official_cached() -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return all(isinstance(try_to_load_from_cache(OFFICIAL_REPO, f), str) for f in OFFICIAL_FILES.values())
    except Exception:
        return False
