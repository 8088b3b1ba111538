"""Resuming a run: the newest checkpoint that reads back whole, and a config that continues the same run.

A checkpoint is marked complete only after every file was written and synced, but a disk can still lose
or truncate a file later. Then the newest readable checkpoint is used instead, and the log says which file
was bad. A resumed run replays the steps an uninterrupted one takes only under the same settings, so a
changed key that alters what a step computes is refused; one that does not (checkpoint cadence, logging,
where to stop) is accepted with a warning naming it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusionframes.components import ModelComponents
from fusionframes.io.checkpoints import load_model_folder
from fusionframes.training.config import TrainConfig
from fusionframes.training.state import list_checkpoints, read_checkpoint_state

logger = logging.getLogger(__name__)

# Keys a resumed run may change: none of them alters what a step computes. max_steps stretches the
# learning-rate schedule (the usual way to train a finished run for longer); init_from is not read on resume.
RESUME_SAFE_KEYS = frozenset(
    {
        "stop_after",
        "max_steps",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "sample_every",
        "sample_prompts",
        "num_workers",
        "init_from",
    }
)

SAFE_CHANGE_NOTES = {
    "max_steps": "the learning-rate schedule now spans the new max_steps from the checkpoint on",
    "init_from": "a resumed run starts from its checkpoint, not from init_from",
}


@dataclass
class Resumed:
    """The checkpoint a run continues from, its training state and its model folder."""

    checkpoint: Path
    state: dict[str, Any]
    components: ModelComponents | None  # None for a LoRA run's checkpoint (an adapter, no model folder)


def read_resumable(run_dir: Path) -> Resumed:
    """The newest complete checkpoint whose files read back; older ones are tried when a newer one is bad."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"resume: no complete checkpoint under {run_dir / 'checkpoints'}")
    problems = []
    for checkpoint in reversed(checkpoints):
        try:
            state = read_checkpoint_state(checkpoint)
            if (checkpoint / "adapter").is_dir():  # a LoRA run: its base is rebuilt from init_from
                from fusionframes.lora.files import read_adapter

                read_adapter(checkpoint / "adapter")
                components = None
            else:
                components = load_model_folder(checkpoint / "model")
        except (OSError, ValueError, KeyError) as error:  # safetensors and JSON errors are ValueErrors
            problems.append(f"{checkpoint.name}: {' '.join(str(error).split())}")
            logger.warning("resume: %s is unreadable (%s)", checkpoint, " ".join(str(error).split()))
            continue
        if problems:
            logger.warning("resume: falling back to the previous complete checkpoint %s", checkpoint)
        return Resumed(checkpoint, state, components)
    raise ValueError(
        f"resume: no readable checkpoint under {run_dir / 'checkpoints'}: " + "; ".join(problems)
    )


def previous_config(resumed: Resumed, run_dir: Path) -> dict[str, Any] | None:
    """The config the checkpoint was trained with (older checkpoints: the run folder's train_config.json)."""
    saved = resumed.state.get("progress", {}).get("config")
    if isinstance(saved, dict):
        return saved
    path = run_dir / "train_config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            return None
    return None


def check_resume_config(cfg: TrainConfig, previous: dict[str, Any] | None) -> None:
    """Refuse changed keys that break an exact resume; warn for the ones that do not."""
    if previous is None:
        return
    # compared as JSON: a config read back from train_config.json has string keys and lists for tuples
    current = json.loads(json.dumps(cfg.to_dict()))
    previous = json.loads(json.dumps(previous))
    changed = sorted(k for k in current.keys() & previous.keys() if current[k] != previous[k])
    refused = [k for k in changed if k not in RESUME_SAFE_KEYS]
    if refused:
        what = ", ".join(f"{k} {previous[k]!r} -> {current[k]!r}" for k in refused)
        raise ValueError(
            f"resume: the config changed since the checkpoint ({what}); a resumed run must compute the same "
            "steps, so restore these keys, or start a new run from the checkpoint with init_from"
        )
    for key in changed:
        note = SAFE_CHANGE_NOTES.get(key, "it does not change what a step computes")
        logger.warning("resume: %s changed %r -> %r (accepted: %s)", key, previous[key], current[key], note)
