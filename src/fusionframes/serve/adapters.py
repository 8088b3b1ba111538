"""LoRA adapters in serve jobs: the ``lora`` job parameter, checked when a job is queued and attached by
the worker for that job only.

A server offers adapters only when it is started with ``--lora-dir DIR`` (``fusionframes worker`` takes
the same option, pointing at the same folder on its host). A job names adapter folders by their path
*relative to DIR*: ``"styles/pink"``, ``"styles/pink:0.8"`` or ``{"path": "styles/pink", "scale": 0.8}``.
An absolute path, a ``..`` that climbs out of DIR, or a symbolic link that points outside it is refused:
a client can make the server read only the folders its operator put under DIR, never any other file.

At queue time (:func:`check_lora`) every entry is read and checked as ``generate --lora`` checks it (a
missing folder, a missing or corrupt file, a non-finite scale) and against the served model (the network
the manifest names, and the hash of that network's base weights, computed once when the server starts:
:func:`served_base_hashes`), so a bad adapter is a 422 naming ``lora``, never a failed job. The worker
reads the folders again when the job runs (they may have changed) and attaches them around that job only
(:func:`attached`): unloading puts the original layers back, so the next job is the base model exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

MAX_LORAS = 8  # adapters one job may stack
LORA_NOTE = "this server takes no adapters; an operator enables them with `fusionframes serve --lora-dir DIR`"


@dataclass(frozen=True)
class AdapterRoot:
    """The folder a server's jobs may take adapters from, and the served model's base-weight hashes."""

    root: Path  # resolved, an existing directory
    hashes: dict[str, str]  # component (keyframe_unet, interpolation_unet) -> weights_hash of the base

    @classmethod
    def open(cls, folder: str | Path, model: Any, hashes: dict[str, str] | None = None) -> AdapterRoot:
        """Check ``folder`` (``ValueError`` naming ``lora-dir``) and hash the served model's networks
        (once per server start; ``hashes`` skips that when they are known)."""
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise ValueError(f"lora-dir: {root} is not a folder")
        return cls(root.resolve(), hashes if hashes is not None else served_base_hashes(model))

    def resolve(self, relative: str) -> Path:
        """The folder a job's adapter path names, refused when it is not inside the root."""
        return resolve_inside(self.root, relative)

    def listing(self, limit: int = 200) -> list[str]:
        """Adapter folders under the root (two levels deep) made for the served model, relative: what
        ``/api/models`` offers (only the manifests are read)."""
        import json

        from fusionframes.lora.files import MANIFEST

        found = []
        for manifest in sorted([*self.root.glob(f"*/{MANIFEST}"), *self.root.glob(f"*/*/{MANIFEST}")]):
            relative = manifest.parent.relative_to(self.root)
            if any(part.startswith(".") for part in relative.parts):
                continue  # a folder being written (save_adapter's temporary names)
            try:
                base = json.loads(manifest.read_text()).get("base_hash")
            except (OSError, ValueError):
                continue
            if base in self.hashes.values():
                found.append(relative.as_posix())
        return found[:limit]


def served_base_hashes(model: Any) -> dict[str, str]:
    """``weights_hash`` of the served model's two U-Nets, as an adapter's manifest records it. Loads the
    model once (the weights are freed after); the hash is dtype-independent, so it matches the networks a
    worker loads in any precision."""
    from fusionframes.io.checkpoints import load_model
    from fusionframes.lora.files import COMPONENTS
    from fusionframes.lora.layers import weights_hash

    components = load_model(model)
    return {name: weights_hash(getattr(components, name)) for name in COMPONENTS}


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative``, resolved (symbolic links followed); ``ValueError`` naming ``lora`` when the
    path is absolute or ends up outside ``root``."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("~") or "\\" in relative or ":" in pure.parts[0]:
        raise ValueError(
            f"lora: {relative!r} must be a path relative to the server's adapters folder (--lora-dir)"
        )
    target = (root / Path(*pure.parts)).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"lora: {relative!r} leaves the server's adapters folder (--lora-dir)")
    return target


def entry_of(value: Any) -> tuple[str, float]:
    """One ``lora`` entry -> (relative path, scale): ``"PATH"``, ``"PATH:SCALE"`` or
    ``{"path": PATH, "scale": SCALE}``; a scale that is not a finite number is refused."""
    if isinstance(value, dict):
        path, scale = value.get("path"), value.get("scale", 1.0)
        if not isinstance(path, str) or not path:
            raise ValueError("lora: each object needs a 'path' string")
    elif isinstance(value, str):
        from fusionframes.lora.pipeline import split_scale

        path, tail = split_scale(value)  # a job's tail must be a number (no folder names with colons)
        scale = 1.0
        if tail is not None:
            try:
                scale = float(tail)
            except ValueError:
                raise ValueError(f"lora: the scale of {value!r} must be a number, got {tail!r}") from None
    else:
        raise ValueError(f"lora: each entry is 'PATH[:SCALE]' or {{path, scale}}, got {type(value).__name__}")
    if not path:
        raise ValueError(f"lora: {value!r} names no adapter folder")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise ValueError(f"lora: the scale of {path!r} must be a finite number, got {scale!r}")
    return path, float(scale)


def read_entries(entries: Any, adapters: AdapterRoot | None) -> list[tuple[str, float, Any]]:
    """Every entry read and checked: (relative path, scale, the :class:`~fusionframes.lora.files.Adapter`);
    ``ValueError("lora: ...")`` for the first problem."""
    from fusionframes.lora.files import read_adapter

    if adapters is None:
        raise ValueError(f"lora: {LORA_NOTE}")
    if not isinstance(entries, list) or not entries:
        raise ValueError("lora: a list of 'PATH[:SCALE]' strings or {path, scale} objects")
    if len(entries) > MAX_LORAS:
        raise ValueError(f"lora: {len(entries)} adapters; a job may stack at most {MAX_LORAS}")
    read = []
    for value in entries:
        path, scale = entry_of(value)
        folder = adapters.resolve(path)
        try:
            adapter = read_adapter(folder)
        except (OSError, ValueError) as error:
            text = str(error).removeprefix("lora: ").replace(str(adapters.root) + "/", "")
            raise ValueError(f"lora: {path!r}: {text}") from None
        read.append((path, scale, adapter))
    return read


def check_lora(entries: Any, adapters: AdapterRoot | None, model_name: str) -> list[dict[str, Any]]:
    """A job's ``lora`` checked against the served model; returns the entries as stored
    (``[{"path": ..., "scale": ...}]``, the form that re-makes the job)."""
    stored = []
    for path, scale, adapter in read_entries(entries, adapters):
        assert adapters is not None  # read_entries refuses None
        expected = adapters.hashes.get(adapter.component)
        if expected is None:
            raise ValueError(f"lora: {path!r} adapts a {adapter.component}, which the served model lacks")
        if adapter.base_hash != expected:
            other = [c for c, h in adapters.hashes.items() if h == adapter.base_hash]
            why = (
                f"its manifest says {adapter.component}, but it was trained on this model's {other[0]}"
                if other
                else f"it was trained on base model {adapter.base_model!r} ({adapter.base_hash[:19]}...), "
                f"not on the served {model_name!r} ({expected[:19]}...)"
            )
            raise ValueError(f"lora: {path!r} does not fit the served model: {why}")
        stored.append({"path": path, "scale": scale})
    return stored


@contextmanager
def attached(components: Any, entries: Any, adapters: AdapterRoot | None) -> Iterator[list[str]]:
    """Attach a job's adapters to ``components`` (read again: a folder may have changed since the job was
    queued) for the ``with`` block, then remove them: the next job runs on the base networks exactly."""
    from fusionframes.lora.pipeline import LoraRequest, apply_lora_requests, unload_lora

    if not entries:
        yield []
        return
    requests = [LoraRequest(adapter, scale) for _, scale, adapter in read_entries(entries, adapters)]
    names = apply_lora_requests(components, requests)
    try:
        yield names
    finally:
        for name in names:
            unload_lora(components, name)
