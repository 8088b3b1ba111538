"""Training checkpoints: tensors in safetensors, structure in JSON, written atomically.

A checkpoint folder ``step-00001000/`` holds ``model/`` (a normal model folder with the EMA weights:
usable for generation as is) and ``state/`` (raw weights, EMA, optimizer, LR scheduler, step, RNG).
It is assembled in a temporary folder and renamed into place, so a process killed at any moment
leaves either the previous checkpoint or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PREFIX = "step-"


def flatten_tensors(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested structure into a JSON skeleton and a flat dict of tensors."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, key: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().clone()  # clone: tied weights must not share storage
            return {"__tensor__": key}
        if isinstance(value, dict):
            return {
                "__dict__": [
                    [walk(k, f"{key}.k{i}"), walk(v, f"{key}.{i}")] for i, (k, v) in enumerate(value.items())
                ]
            }
        if isinstance(value, (list, tuple)):
            items = [walk(v, f"{key}.{i}") for i, v in enumerate(value)]
            return {"__tuple__": items} if isinstance(value, tuple) else items
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot store {type(value).__name__} at {key} in a checkpoint")

    return walk(obj, prefix or "root"), tensors


def unflatten_tensors(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {
                unflatten_tensors(k, tensors): unflatten_tensors(v, tensors) for k, v in skeleton["__dict__"]
            }
        if "__tuple__" in skeleton:
            return tuple(unflatten_tensors(v, tensors) for v in skeleton["__tuple__"])
    if isinstance(skeleton, list):
        return [unflatten_tensors(v, tensors) for v in skeleton]
    return skeleton


def save_structured(obj: Any, folder: Path, name: str) -> None:
    skeleton, tensors = flatten_tensors(obj)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton))


class CheckpointFileError(ValueError):
    """A file of a training checkpoint cannot be read back (truncated, corrupt or missing)."""


def load_structured(folder: Path, name: str) -> Any:
    """The structure ``save_structured`` wrote; a bad file is a :class:`CheckpointFileError` naming it."""
    tensor_file, skeleton_file = folder / f"{name}.safetensors", folder / f"{name}.json"
    try:
        tensors = load_file(str(tensor_file))
    except Exception as error:  # safetensors raises its own SafetensorError (not an OSError) for bad files
        raise CheckpointFileError(f"{tensor_file}: unreadable ({' '.join(str(error).split())})") from None
    try:
        return unflatten_tensors(json.loads(skeleton_file.read_text()), tensors)
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointFileError(f"{skeleton_file}: unreadable ({' '.join(str(error).split())})") from None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def write_checkpoint(
    run_dir: Path,
    step: int,
    write_model: Any,
    state: dict[str, Any],
    keep: int = 2,
    artifact: str = "model",
) -> Path:
    """Write ``step-XXXXXXXX`` atomically; ``write_model(path)`` writes the usable model folder
    (``artifact``: its name, ``adapter`` for a LoRA run's adapter folder)."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        write_model(tmp / artifact)
        (tmp / "state").mkdir()
        for name, value in state.items():
            save_structured(value, tmp / "state", name)
        (tmp / "state" / "COMPLETE").write_text(str(step))
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder without the COMPLETE marker is ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / "state" / "COMPLETE").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def read_checkpoint_state(checkpoint: Path) -> dict[str, Any]:
    folder = checkpoint / "state"
    names = sorted(p.stem for p in folder.glob("*.json"))
    return {name: load_structured(folder, name) for name in names}
