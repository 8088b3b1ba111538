"""Adapter folders: peft's two files plus a manifest naming the network and the base model they fit.

    my-adapter/
      adapter_config.json        peft's LoraConfig (rank, alpha, target layers)
      adapter_model.safetensors  the low-rank tensors, keys as peft's PeftModel.save_pretrained writes them
      fusionframes_adapter.json  component (keyframe_unet | interpolation_unet), base model name and hash

peft (``PeftModel.from_pretrained`` on the bare network) and diffusers-style tooling read the first two;
the manifest lets a pipeline refuse an adapter made for another network or another base model before it
generates anything. Folders are written to a temporary name and renamed, so a crash leaves none half made.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusionframes.lora.layers import adapter_names, attach, remove, weights_hash

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MANIFEST = "fusionframes_adapter.json"
PEFT_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before every module path
COMPONENTS = ("keyframe_unet", "interpolation_unet")
FORMAT = "fusionframes-lora"


@dataclass
class Adapter:
    """An adapter folder read back and checked: its peft config, tensors (keys without the peft prefix,
    as ``get_peft_model_state_dict`` gives them) and manifest."""

    path: Path
    config: Any  # peft LoraConfig
    state: dict[str, torch.Tensor]
    manifest: dict[str, Any]

    @property
    def component(self) -> str:
        return str(self.manifest["component"])

    @property
    def base_model(self) -> str:
        return str(self.manifest["base_model"])

    @property
    def base_hash(self) -> str:
        return str(self.manifest["base_hash"])

    def layer_names(self) -> list[str]:
        """The adapted layers, from the tensor names (``x.lora_A.weight`` -> ``x``)."""
        names = {key.split(".lora_")[0] for key in self.state}
        return sorted(names)


def save_adapter(
    module: nn.Module,
    adapter_name: str,
    folder: str | Path,
    component: str,
    base_model: str,
    base_hash: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write adapter ``adapter_name`` of ``module`` as an adapter folder (replacing one already there)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    if component not in COMPONENTS:
        raise ValueError(f"component: unknown {component!r}; allowed: {', '.join(COMPONENTS)}")
    folder = Path(folder)
    state = get_peft_model_state_dict(module, adapter_name=adapter_name)
    config = module.peft_config[adapter_name]
    config.base_model_name_or_path = base_model
    manifest = {
        "format": FORMAT,
        "format_version": 1,
        "component": component,
        "base_model": base_model,
        "base_hash": base_hash,
        "rank": config.r,
        "alpha": config.lora_alpha,
        "layers": len({k.split(".lora_")[0] for k in state}),
        "parameters": int(sum(v.numel() for v in state.values())),
        **(extra or {}),
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        config.save_pretrained(str(tmp))
        tensors = {PEFT_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an adapter is shared like a model folder
        for file in tmp.iterdir():
            os.chmod(file, 0o644)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"lora: {path} is corrupt ({what}: {' '.join(str(error).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"lora: {path} is corrupt ({what}: expected a JSON object)")
    return data


def read_adapter(path: str | Path) -> Adapter:
    """Read and check an adapter folder; every problem is a ValueError naming the file."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"lora: adapter folder not found: {folder}")
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST) if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"lora: {folder} is not a complete adapter folder: missing {', '.join(missing)}")
    manifest = _read_json(folder / MANIFEST, "manifest")
    for key in ("component", "base_model", "base_hash"):
        if not isinstance(manifest.get(key), str):
            raise ValueError(f"lora: {folder / MANIFEST} is corrupt (no {key!r} string)")
    if manifest.get("format") != FORMAT or manifest["component"] not in COMPONENTS:
        raise ValueError(
            f"lora: {folder / MANIFEST} is not a FusionFrames adapter manifest for a "
            f"{' or '.join(COMPONENTS)} (component {manifest.get('component')!r})"
        )
    raw = _read_json(folder / ADAPTER_CONFIG, "peft config")
    if raw.get("peft_type") != "LORA":
        raise ValueError(
            f"lora: {folder / ADAPTER_CONFIG} is not a LoRA config (peft_type {raw.get('peft_type')!r})"
        )
    try:
        config = LoraConfig.from_pretrained(str(folder))
    except (TypeError, ValueError) as error:
        raise ValueError(f"lora: {folder / ADAPTER_CONFIG} is corrupt ({error})") from None
    try:
        tensors = load_file(str(folder / ADAPTER_WEIGHTS))
    except Exception as error:  # safetensors raises its own error types for truncated or foreign files
        raise ValueError(
            f"lora: {folder / ADAPTER_WEIGHTS} is corrupt ({' '.join(str(error).split())})"
        ) from None
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in tensors.items()}
    if not state or any(".lora_A." not in k and ".lora_B." not in k for k in state):
        raise ValueError(f"lora: {folder / ADAPTER_WEIGHTS} holds no LoRA tensors (lora_A / lora_B)")
    return Adapter(folder, config, state, manifest)


def check_base(adapter: Adapter, module: nn.Module, component: str, model_name: str) -> None:
    """Refuse an adapter made for another network, another architecture or other base weights."""
    if adapter.component != component:
        raise ValueError(f"lora: {adapter.path} adapts the {adapter.component}, not the {component}")
    from fusionframes.lora.layers import adaptable_layers

    present = set(adaptable_layers(module))
    absent = [n for n in adapter.layer_names() if n not in present]
    if absent:
        raise ValueError(
            f"lora: {adapter.path} was made for another {component} architecture: this one has no layer "
            f"{absent[0]!r} ({len(absent)} of its {len(adapter.layer_names())} layers are missing)"
        )
    found = weights_hash(module)
    if found != adapter.base_hash:
        raise ValueError(
            f"lora: {adapter.path} was trained on base model {adapter.base_model!r} "
            f"({adapter.base_hash[:19]}...), but this {component} is {model_name!r} with other weights "
            f"({found[:19]}...); load it onto the model it was trained on"
        )


def apply_adapter(module: nn.Module, adapter: Adapter, adapter_name: str, scale: float = 1.0) -> None:
    """Attach ``adapter`` to ``module`` as ``adapter_name`` and load its tensors (shapes checked)."""
    import re

    from peft import set_peft_model_state_dict

    from fusionframes.lora.layers import set_scale

    config = adapter.config
    config.target_modules = "^(" + "|".join(re.escape(n) for n in adapter.layer_names()) + ")$"
    config.inference_mode = True
    attach(module, config, adapter_name)
    try:
        result = set_peft_model_state_dict(module, adapter.state, adapter_name=adapter_name)
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if ".lora_" in k]
        if unexpected:
            raise ValueError(f"lora: {adapter.path} has tensors this network cannot take: {unexpected[:3]}")
        set_scale(module, adapter_name, scale)
    except RuntimeError as error:  # size mismatch: same layer names, other widths
        remove(module, adapter_name)
        first = " ".join(str(error).split())[:300]
        raise ValueError(f"lora: {adapter.path} was made for another architecture ({first})") from None
    except BaseException:
        if adapter_name in adapter_names(module):
            remove(module, adapter_name)
        raise
    for param in module.parameters():
        param.requires_grad_(False)
