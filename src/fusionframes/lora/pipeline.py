"""Adapters on a loaded model: ``pipe.load_lora`` / ``set_lora_scale`` / ``unload_lora``, the command
line's ``--lora PATH[:SCALE]``, and ``lora merge`` (an adapter baked into a new model folder).

Everything here works on the networks of a :class:`~fusionframes.components.ModelComponents`; the
pipelines only expose it (``LoraMixin``), so however a pipeline samples, an attached adapter is part of
the network it calls. Scale 0 multiplies the low-rank update by zero (the base output exactly) and
unloading puts the original layers back, so an unloaded adapter leaves nothing behind.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fusionframes.components import ModelComponents
from fusionframes.lora.files import COMPONENTS, Adapter, apply_adapter, check_base, read_adapter
from fusionframes.lora.layers import adapter_names, check_scale, remove, set_scale


def _network(components: ModelComponents, component: str) -> nn.Module:
    module = getattr(components, component)
    return getattr(module, "_orig_mod", module)  # a torch.compile'd network: adapt the module inside


def loaded_adapters(components: ModelComponents) -> dict[str, str]:
    """Adapter name -> the network it is attached to, for every loaded adapter."""
    return {name: c for c in COMPONENTS for name in adapter_names(_network(components, c))}


def _unique_name(components: ModelComponents, wanted: str) -> str:
    base = re.sub(r"\W", "_", wanted) or "lora"
    taken = loaded_adapters(components)
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def load_lora(
    components: ModelComponents,
    adapter: str | Path | Adapter,
    scale: float = 1.0,
    name: str | None = None,
) -> str:
    """Attach an adapter folder to the network its manifest names; returns the adapter's name (the
    folder name unless ``name`` is given). Refused, with nothing attached, when the adapter is for another
    architecture or other base weights, or a file is missing or corrupt."""
    scale = check_scale(scale)
    if not isinstance(adapter, Adapter):
        adapter = read_adapter(adapter)
    network = _network(components, adapter.component)
    check_base(adapter, network, adapter.component, components.name)
    if name is not None and name in loaded_adapters(components):
        raise ValueError(f"lora: an adapter named {name!r} is already loaded; unload it first")
    chosen = name or _unique_name(components, adapter.path.name)
    apply_adapter(network, adapter, chosen, scale)
    return chosen


def set_lora_scale(components: ModelComponents, scale: float, name: str | None = None) -> None:
    """Scale adapter ``name``'s update (None: every loaded adapter); 0 gives the base model's output."""
    scale = check_scale(scale)
    loaded = loaded_adapters(components)
    if name is not None and name not in loaded:
        raise ValueError(f"lora: no adapter named {name!r} is loaded; loaded: {sorted(loaded)}")
    for adapter, component in loaded.items():
        if name is None or adapter == name:
            set_scale(_network(components, component), adapter, scale)


def unload_lora(components: ModelComponents, name: str | None = None) -> None:
    """Remove adapter ``name`` (None: all of them); the original layers are put back untouched."""
    loaded = loaded_adapters(components)
    if name is not None and name not in loaded:
        raise ValueError(f"lora: no adapter named {name!r} is loaded; loaded: {sorted(loaded)}")
    for component in COMPONENTS:
        network = _network(components, component)
        for adapter in adapter_names(network):
            if name is None or adapter == name:
                remove(network, adapter)


def merge_loras(components: ModelComponents) -> list[str]:
    """Fold every loaded adapter (at its scale) into its network's weights and remove it."""
    merged = []
    for component in COMPONENTS:
        network = _network(components, component)
        names = adapter_names(network)
        if names:
            remove(network, None, merge=True)
            merged.extend(names)
    return merged


class LoraMixin:
    """``load_lora`` / ``set_lora_scale`` / ``unload_lora`` for a pipeline whose networks are
    ``lora_components``."""

    @property
    def lora_components(self) -> ModelComponents:
        return self.components  # type: ignore[attr-defined]

    def load_lora(self, path: str | Path, scale: float = 1.0, name: str | None = None) -> str:
        """Attach the adapter folder ``path`` at ``scale``; returns its name (for the other two calls)."""
        return load_lora(self.lora_components, path, scale, name)

    def set_lora_scale(self, scale: float, name: str | None = None) -> None:
        """Scale one adapter's (or, with ``name`` None, every adapter's) update; 0 = the base model."""
        set_lora_scale(self.lora_components, scale, name)

    def unload_lora(self, name: str | None = None) -> None:
        """Remove one adapter (or all): the model is then exactly the base model again."""
        unload_lora(self.lora_components, name)

    @property
    def loras(self) -> dict[str, str]:
        """Loaded adapters: name -> the network (keyframe_unet / interpolation_unet) it adapts."""
        return loaded_adapters(self.lora_components)


@dataclass(frozen=True)
class LoraRequest:
    """One ``--lora PATH[:SCALE]`` (or a serve job's ``lora`` entry), read and checked up front."""

    adapter: Adapter
    scale: float


def split_scale(text: str) -> tuple[str, str | None]:
    """``"PATH:SCALE"`` -> ``("PATH", "SCALE")``; ``"PATH"`` (or ``":X"``) -> ``(text, None)``. Only the last
    colon counts, so a path may hold colons; callers decide what a tail that is not a number means."""
    head, sep, tail = text.rpartition(":")
    return (head, tail) if sep and head else (text, None)


def parse_lora_argument(text: str) -> LoraRequest:
    """``PATH`` or ``PATH:SCALE``: the folder is read and checked now, before any model is loaded. A tail
    that is not a number is part of the path (a folder may be named ``style:v2``)."""
    path, scale = text, 1.0
    head, tail = split_scale(text)
    if tail is not None:
        try:
            value = float(tail)
        except ValueError:
            value = None
        if value is not None:
            if not math.isfinite(value):
                raise ValueError(f"lora: the scale of {text!r} must be a finite number, got {tail!r}")
            path, scale = head, value
    return LoraRequest(read_adapter(path), scale)


def apply_lora_requests(components: ModelComponents, requests: list[LoraRequest] | None) -> list[str]:
    """Attach every requested adapter (``--lora``, repeatable); on an error none stays attached."""
    names: list[str] = []
    try:
        for request in requests or []:
            names.append(load_lora(components, request.adapter, request.scale))
    except BaseException:
        for name in names:
            unload_lora(components, name)
        raise
    return names
