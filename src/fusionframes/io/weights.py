"""Reading weight files safely and loading them strictly: the released ``.pt`` files with
``torch.load(weights_only=True)`` (never pickled code), safetensors with their metadata, JSON configs,
and a key-and-shape match that reports every difference instead of filling anything in. Shared by the
model folders (:mod:`fusionframes.io.checkpoints`) and the 1.1 release (:mod:`fusionframes.io.official_kv11`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn


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
        # Memory-mapped: tensors are read from the page cache as they are cast, with no private copy of
        # the whole file first (files in the legacy, non-zip format cannot be mapped and are read).
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, not a checkpoint, pickled code refused...
        raise CheckpointError(
            f"{what}: cannot read {path} as a weights-only PyTorch checkpoint "
            f"(truncated or wrong file?): {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        ) from error


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    return read_safetensors_with_metadata(path, what)[0]


def read_safetensors_with_metadata(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a safetensors file and its string metadata (empty when it has none)."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        return load_file(str(path)), metadata
    except Exception as error:
        raise CheckpointError(
            f"{what}: cannot read {path} (truncated or not safetensors): {error}"
        ) from error


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, with errors that name ``what`` and the file (not ``[Errno 2]`` or
    ``Invalid control character``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path.name} not found in {path.parent}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{what}: {path} is not a text file (not UTF-8)") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{what}: {path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what}: {path} must hold a JSON object, not a {type(data).__name__}")
    return data


def require_keys(state: Mapping, keys: tuple[str, ...], what: str, path: str | Path) -> None:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what}: {path} holds a {type(state).__name__}, expected a dict")
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(
            f"{what}: {path} lacks key(s) {missing}; found {sorted(state)[:10]} "
            "(is this the right file for this slot?)"
        )


def load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], what: str, assign_as: torch.dtype | None = None
) -> None:
    """Strict key and shape match, with a report of the missing, unexpected and mis-shaped keys.

    ``assign_as``: load by assignment (:func:`assign_weights`): ``module`` may be on the meta device, and
    the file's tensors, cast to this dtype, become its parameters.
    """
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
    if assign_as is None:
        module.load_state_dict(state, strict=True)
    else:
        assign_weights(module, state, assign_as)


def assign_weights(module: nn.Module, state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> None:
    """Make ``state``'s tensors ``module``'s own (``load_state_dict(assign=True)``), cast to ``dtype``.

    Built on the meta device, the module allocates nothing before this; the cast replaces the entries
    of a mutable ``state`` one by one, so the file's copy of a tensor is freed as its cast is made and
    at no point do two full copies of the weights exist. Buffers that no file holds stay on meta unless
    they are empty (a dtype probe), which are made on the weights' device.
    """
    if isinstance(state, dict):
        for key in list(state):
            if state[key].is_floating_point():
                state[key] = state[key].to(dtype)
        cast = state
    else:
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(cast, strict=True, assign=True)
    device = next((t.device for t in cast.values()), torch.device("cpu"))
    for sub in module.modules():
        for name, buffer in list(sub.named_buffers(recurse=False)):
            if buffer is not None and buffer.is_meta:
                if buffer.numel():
                    raise CheckpointError(f"{type(sub).__name__}.{name}: not in the file, cannot be made")
                setattr(sub, name, torch.empty(buffer.shape, dtype=buffer.dtype, device=device))
