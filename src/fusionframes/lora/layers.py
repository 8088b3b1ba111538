"""Which layers of a network get LoRA, and attaching, scaling, removing and merging peft adapters.

Adapters are attached at the network level (peft's ``inject_adapter_in_model`` on the ``nn.Module``),
not through a pipeline, so training, the pipelines and ``lora merge`` share one path and a pipeline
refactor cannot break them. peft writes the low-rank layers; this module only picks their names, checks
the numbers a user gives, and keeps several named adapters on one network switchable.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import torch
from torch import nn

TARGET_PRESETS: dict[str, str] = {
    # the spatial self- and cross-attention projections of every block (the cross-attention reads text)
    "attention": r"(^|\.)attention\.(to_query|to_key|to_value|output_layer)$",
    # the same plus the temporal attention along frames
    "attention+temporal": r"(^|\.)(attention|temporal_attention)\.(to_query|to_key|to_value|output_layer)$",
}
ALL_LINEAR = "all-linear"
ADAPTABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LoraSpec:
    """What a LoRA run adds: ``rank`` and ``alpha`` (the update is scaled by alpha / rank) on ``targets``."""

    rank: int
    alpha: float
    targets: str = "attention"

    def __post_init__(self) -> None:
        check_rank(self.rank)
        check_alpha(self.alpha)
        if not isinstance(self.targets, str) or not self.targets.strip():
            raise ValueError(f"lora_targets: must be a preset or a pattern, got {self.targets!r}")


def check_rank(rank: object, name: str = "lora_rank") -> int:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"{name}: must be a positive integer, got {rank!r}")
    return rank


def check_alpha(alpha: object, name: str = "lora_alpha") -> float:
    ok = isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
    if not ok or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"{name}: must be a finite number > 0, got {alpha!r}")
    return float(alpha)


def check_scale(scale: object, name: str = "scale") -> float:
    ok = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    if not ok or not math.isfinite(scale):
        raise ValueError(f"{name}: must be a finite number, got {scale!r}")
    return float(scale)


def adaptable_layers(module: nn.Module) -> list[str]:
    """Names of the layers peft can wrap (linear and convolution layers), in module order."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = []
    inside_adapter: list[str] = []
    for name, child in module.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside_adapter):
            continue  # the base layer and the low-rank parts of an already attached adapter
        if isinstance(child, BaseTunerLayer):
            inside_adapter.append(name)
            names.append(name)
        elif isinstance(child, ADAPTABLE_TYPES) and name:
            names.append(name)
    return names


def layer_families(names: list[str]) -> list[str]:
    """``names`` with block numbers folded to ``N``: the few distinct layer kinds, for error messages."""
    return sorted({re.sub(r"\.\d+(?=\.|$)", ".N", name) for name in names})


def resolve_targets(module: nn.Module, targets: str, name: str = "lora_targets") -> list[str]:
    """The layer names ``targets`` picks: a preset, ``all-linear``, or a regular expression searched in
    every adaptable layer's name. A pattern that matches nothing is an error listing what exists."""
    layers = adaptable_layers(module)
    if targets == ALL_LINEAR:
        chosen = [n for n in layers if isinstance(module.get_submodule(n), nn.Linear)]
    else:
        pattern = TARGET_PRESETS.get(targets, targets)
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise ValueError(f"{name}: {targets!r} is not a valid regular expression ({error})") from None
        chosen = [n for n in layers if compiled.search(n)]
    if not chosen:
        raise ValueError(
            f"{name}: {targets!r} matches no layer of this network; presets: "
            f"{', '.join([*TARGET_PRESETS, ALL_LINEAR])}; its layers (block numbers shown as N): "
            + ", ".join(layer_families(layers))
        )
    return chosen


def lora_config(spec: LoraSpec, target_names: list[str]):
    """peft's ``LoraConfig`` for exactly ``target_names``: anchored regular expressions, so one layer's
    name never also picks a layer whose name merely ends the same way."""
    from peft import LoraConfig

    anchored = "|".join(re.escape(n) for n in target_names)
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=f"^({anchored})$",
        lora_dropout=0.0,
        bias="none",
        init_lora_weights=True,  # B = 0: the adapted network starts as exactly the base network
    )


def attach(module: nn.Module, config, adapter_name: str) -> None:
    """Add adapter ``adapter_name`` (a peft ``LoraConfig``) to ``module``, in place; the adapters already
    there stay active with it."""
    import warnings

    from peft import inject_adapter_in_model

    active = adapter_names(module)
    if adapter_name in active:
        raise ValueError(f"lora: an adapter named {adapter_name!r} is already loaded; unload it first")
    with warnings.catch_warnings():  # peft warns that a second adapter makes a multi-adapter model: intended
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, module, adapter_name=adapter_name)
    set_active(module, [*active, adapter_name])


def lora_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in module.named_modules() if isinstance(m, LoraLayer)]


def adapter_names(module: nn.Module) -> list[str]:
    """Adapters attached to ``module``, in the order they were loaded."""
    config = getattr(module, "peft_config", None)
    return list(config) if isinstance(config, dict) else []


def set_active(module: nn.Module, names: list[str]) -> None:
    """Make ``names`` the adapters every LoRA layer adds (peft then also marks them trainable; inference
    runs under ``no_grad``, and training wants exactly that)."""
    for _, layer in lora_layers(module):
        present = [n for n in names if n in layer.lora_A]
        if present:
            layer.set_adapter(present)
        else:
            layer.set_adapter([])


def set_scale(module: nn.Module, adapter_name: str, scale: float) -> None:
    """Multiply adapter ``adapter_name``'s update by ``scale`` (1 = as trained, 0 = the base network)."""
    check_scale(scale)
    if adapter_name not in adapter_names(module):
        raise ValueError(
            f"lora: no adapter named {adapter_name!r} is loaded; loaded: {adapter_names(module)}"
        )
    for _, layer in lora_layers(module):
        if adapter_name in layer.lora_A:
            layer.set_scale(adapter_name, scale)


def remove(module: nn.Module, adapter_name: str | None = None, merge: bool = False) -> None:
    """Take adapter ``adapter_name`` (None: every adapter) off ``module``, leaving the base layers as they
    were; with ``merge``, fold the active adapters into the base weights first (``lora merge``)."""
    names = adapter_names(module)
    drop = names if adapter_name is None else [adapter_name]
    if adapter_name is not None and adapter_name not in names:
        raise ValueError(f"lora: no adapter named {adapter_name!r} is loaded; loaded: {names}")
    keep = [n for n in names if n not in drop]
    for name, layer in lora_layers(module):
        if merge:
            layer.merge(adapter_names=[n for n in drop if n in layer.lora_A])
        for adapter in drop:
            if adapter in layer.lora_A:
                layer.delete_adapter(adapter)
        if not keep or not any(n in layer.lora_A for n in keep):
            parent_name, _, child = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, child, layer.get_base_layer())
        else:
            layer.set_adapter([n for n in keep if n in layer.lora_A])
    config = module.peft_config
    for adapter in drop:
        config.pop(adapter, None)
    if not config:
        del module.peft_config


def base_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The base network's tensors under their plain names, whatever adapters are attached."""
    out = {}
    for key, value in module.state_dict().items():
        if ".lora_" in key:
            continue
        out[key.replace(".base_layer.", ".")] = value
    return out


def weights_hash(module: nn.Module) -> str:
    """sha256 of the base network's names, shapes and weights at bfloat16 precision.

    bfloat16, so the same folder loaded in float32, float16 or bfloat16 gives the same hash: each load
    dtype holds the stored value or one rounding of it, and rounding to bfloat16 lands on the same number.
    """
    digest = hashlib.sha256()
    for key, value in sorted(base_state(module).items()):
        digest.update(f"{key}:{tuple(value.shape)};".encode())
        if value.is_floating_point():
            value = value.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16)
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()
