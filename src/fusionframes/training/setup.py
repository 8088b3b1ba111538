"""Where a run's networks come from: a checkpoint being resumed, ``init_from``, or fresh weights (with a
small T5 made from the captions when no text encoder is given)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from fusionframes.components import (
    KEYFRAME_EXTENSIONS,
    ModelComponents,
    build_components,
    load_allowing_extensions,
    with_keyframe_extensions,
)
from fusionframes.config import ModelConfig, preset, small_config
from fusionframes.io.checkpoints import load_model_folder
from fusionframes.text.tokenizer import make_text_encoder_folder
from fusionframes.training.clips import Clip, caption_words
from fusionframes.training.config import TrainConfig
from fusionframes.training.state import read_checkpoint_state
from fusionframes.training.world import World

logger = logging.getLogger(__name__)


def model_config(cfg: TrainConfig) -> ModelConfig:
    if isinstance(cfg.model, dict):
        return ModelConfig.from_dict(cfg.model)
    if cfg.model == "small":
        return small_config(**cfg.model_overrides)
    return preset(str(cfg.model))


def is_training_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "state" / "COMPLETE").is_file() and (Path(path) / "model").is_dir()


def encoder_width(text_encoder: str | Path) -> int | None:
    """The hidden width (``d_model``) of a T5 folder or Hub id; None when it cannot be read here."""
    config = Path(str(text_encoder)) / "config.json"
    if config.is_file():
        width = json.loads(config.read_text()).get("d_model")
        return int(width) if isinstance(width, int) else None
    try:
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(str(text_encoder)).d_model)
    except Exception:  # offline or not a T5: the encoder's own loading reports it later
        return None


def check_encoder_width(components: ModelComponents, source: str | Path) -> None:
    """The text projection must take the width the T5 outputs (a model folder may disagree with it)."""
    width = encoder_width(components.text_encoder)
    expected = components.config.text.encoder_dim
    if width is not None and width != expected:
        raise ValueError(
            f"init_from: {source} has text.encoder_dim={expected} but its text encoder is {width} wide "
            f"(d_model); the text projection cannot read it. Retrain the model that made it, or give a "
            f"text encoder of width {expected}"
        )


def prepare_components(cfg: TrainConfig, clips: list[Clip], run_dir: Path, world: World) -> ModelComponents:
    """Start from ``init_from`` or fresh weights; make a small T5 from the captions when none is given.

    ``init_from`` may be a training checkpoint: its model folder is loaded here and the run then puts the
    checkpoint's raw (non-EMA) weights in place, to continue a run under a new config. Fresh weights take
    the text encoder's real width for the text projection's input (``text.encoder_dim``).
    """
    if cfg.init_from:
        source = Path(cfg.init_from)
        components = load_model_folder(source / "model" if is_training_checkpoint(source) else source)
        check_encoder_width(components, source)
        return components
    text_encoder = cfg.text_encoder
    if text_encoder is None:
        text_encoder = run_dir / "text_encoder_init"
        if world.is_main and not (text_encoder / "config.json").is_file():
            make_small_text_encoder(cfg, clips, run_dir, text_encoder)
        world.barrier()
    torch.manual_seed(cfg.seed)
    config = model_config(cfg)
    width = encoder_width(text_encoder)
    if width is not None and width != config.text.encoder_dim:
        config = dataclasses.replace(config, text=dataclasses.replace(config.text, encoder_dim=width))
    return build_components(config, text_encoder, name=f"fusionframes-{cfg.stage}")


def make_small_text_encoder(cfg: TrainConfig, clips: list[Clip], run_dir: Path, target: Path) -> None:
    spec = cfg.new_text_encoder
    tmp = Path(tempfile.mkdtemp(dir=run_dir))
    try:
        make_text_encoder_folder(
            [c["caption"] for c in clips],
            tmp / "t5",
            vocab_size=spec.vocab_size,
            d_model=spec.d_model,
            num_layers=spec.num_layers,
            num_heads=spec.num_heads,
            d_ff=spec.d_ff,
            seed=cfg.seed,
        )
        os.replace(tmp / "t5", target)
    except RuntimeError as error:  # sentencepiece: every character of the captions needs a piece
        found = re.search(r"(\d+) vs (\d+)", str(error))
        if "Vocabulary size is smaller" not in str(error) or found is None:
            raise
        raise ValueError(
            f"new_text_encoder.vocab_size: {spec.vocab_size} is too small for the captions, which need at "
            f"least {found.group(2)} (one piece per character and the special tokens)"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stable_text_encoder(source: str | Path, run_dir: Path, world: World) -> str | Path:
    """A resumed run's text encoder lives in a checkpoint that pruning deletes later: copy it out."""
    folder = Path(str(source))
    if not folder.is_dir() or (run_dir / "checkpoints").resolve() not in folder.resolve().parents:
        return source
    target = run_dir / "text_encoder_resumed"
    if world.is_main:
        tmp = run_dir / ".text_encoder_resumed.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    world.barrier()
    return target


def start_components(
    cfg: TrainConfig, clips: list[Clip], run_dir: Path, world: World, checkpoint: Path | None
) -> ModelComponents:
    """The networks of the run: a resumed checkpoint's, or :func:`prepare_components`'s; with the keyframe
    extensions the config asks for and the captions' words added to the vocabulary."""
    if checkpoint is not None and cfg.lora_rank is None:
        components = load_model_folder(checkpoint / "model")
        components.text_encoder = stable_text_encoder(components.text_encoder, run_dir, world)
    else:
        components = prepare_components(cfg, clips, run_dir, world)
    extensions = [name for name in KEYFRAME_EXTENSIONS if getattr(cfg, name)]
    if extensions:
        components = with_keyframe_extensions(components, *extensions)
    from fusionframes.training.stages11 import grow_for  # it imports the stages, which import this

    components = grow_for(cfg, components)
    components.vocabulary = frozenset(components.vocabulary) | caption_words(clips)
    return components


def load_text_encoder(components: ModelComponents):
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(str(components.text_encoder))
    encoder = T5EncoderModel.from_pretrained(str(components.text_encoder))
    return tokenizer, encoder


def load_raw_weights(objective: nn.Module, checkpoint: Path, stage: str) -> None:
    """Continue from a checkpoint of the same stage: its raw weights, not the exported EMA."""
    state = read_checkpoint_state(checkpoint)
    if state["progress"].get("stage") != stage:
        raise ValueError(
            f"init_from: {checkpoint} is a {state['progress'].get('stage')!r} checkpoint; a training "
            f"checkpoint can only start a run of the same stage ({stage!r}), else give a model folder"
        )
    # extension layers may be new in this run (its config adds them to the checkpoint's model)
    load_allowing_extensions(objective, state["objective"], f"init_from: {checkpoint}")
    logger.info("init_from: raw weights of %s (step %s)", checkpoint, state["progress"].get("step"))
