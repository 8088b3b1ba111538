"""The training loop for every stage, in plain PyTorch: single process, or DDP/FSDP under torchrun.

``train`` reads top to bottom: the run folder, the data, the networks (:mod:`.setup`), the stage object
(:mod:`.stages`: its ``batch`` and ``loss``), the optimisation (:mod:`.optimisation`), the steps, and
checkpoints (:mod:`.checkpointing`). Every step's randomness comes from seeded generators
(:mod:`.clips`), so a resumed run (:mod:`.resume`) replays exactly what an uninterrupted run computes.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from tqdm.auto import tqdm

from fusionframes.io.atomic import check_writable_folder
from fusionframes.training.checkpointing import Checkpointer, LossLog, write_samples
from fusionframes.training.clips import (
    batch_indices,
    cached_latents,
    encode_clips,
    load_clips,
    step_generator,
)
from fusionframes.training.config import TrainConfig
from fusionframes.training.optimisation import Optimisation, make_optimisation
from fusionframes.training.resume import check_resume_config, previous_config, read_resumable
from fusionframes.training.setup import is_training_checkpoint, load_raw_weights, start_components
from fusionframes.training.stages import Stage, StageSetup, build_stage
from fusionframes.training.state import list_checkpoints
from fusionframes.training.world import World, autocast_for, gradient_sync, init_world

__all__ = [
    "train",
    "train_step",
    "cached_latents",
    "encode_clips",
]  # the latent helpers: layout-prior fitting

logger = logging.getLogger(__name__)


def train(
    cfg: TrainConfig,
    data: str | Path,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) one stage; returns a summary with the loss history of this process."""
    if cfg.lora_rank is not None and cfg.init_from and is_training_checkpoint(cfg.init_from):
        raise ValueError(
            f"init_from: {cfg.init_from} is a training checkpoint; a LoRA run adapts a model folder (its "
            "model/ subfolder, or the run's exported model)"
        )
    world = init_world()
    run_dir = Path(out)
    with RunFolder(run_dir, world):
        resumed = read_resumable(run_dir) if resume else None
        if resumed is not None:
            check_resume_config(cfg, previous_config(resumed, run_dir))
        if world.is_main:
            (run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        world.barrier()

        clips = load_clips(data, cfg, world)
        checkpoint = resumed.checkpoint if resumed is not None else None
        components = start_components(cfg, clips, run_dir, world, checkpoint)
        stage = build_stage(cfg, components, clips, StageSetup(run_dir, world, progress))
        state = resumed.state if resumed is not None else None
        if state is None and cfg.init_from and is_training_checkpoint(cfg.init_from):
            load_raw_weights(stage.objective, Path(cfg.init_from), cfg.stage)
        if checkpoint is not None and cfg.lora_rank is not None:
            from fusionframes.lora.training import check_resumed_base

            check_resumed_base(stage.objective, checkpoint)
        opt = make_optimisation(stage.objective, cfg, world, state)
        start = int(state["progress"]["step"]) if state is not None else 0
        if state is not None:
            logger.info("resumed from %s at step %d", checkpoint, start)

        log = LossLog(run_dir, start, world)
        checkpoints = Checkpointer(run_dir, cfg, components, stage, world)
        history: list[tuple[int, float]] = []
        end = min(cfg.max_steps, cfg.stop_after or cfg.max_steps)
        bar = tqdm(
            range(start, end),
            desc=f"train {cfg.stage}",
            disable=not (progress and world.is_main),
            initial=start,
            total=cfg.max_steps,
        )
        for step in bar:
            started = time.perf_counter()
            loss, grad_norm = train_step(stage, opt, step, world)
            history.append((step, loss))
            log.row(step, loss, opt.lr, grad_norm, time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss:.4f}")
            done = step + 1
            if done % cfg.checkpoint_every == 0 or done == end:
                checkpoints.save(done, opt)
            if cfg.sample_every and done % cfg.sample_every == 0 and world.is_main:
                write_samples(run_dir, done, cfg)

        world.barrier()
        if world.is_main and end > start:
            checkpoints.publish_final_model()
        world.barrier()  # every rank returns only once the final model folder exists
        log.close()
    return {"history": history, "run_dir": str(run_dir), "world_size": world.size}


def train_step(stage: Stage, opt: Optimisation, step: int, world: World) -> tuple[float, float]:
    """One optimizer step over ``grad_accumulation`` micro-batches; returns (mean loss, gradient norm)."""
    cfg = stage.cfg
    opt.optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for micro in range(cfg.grad_accumulation):
        gen = step_generator(cfg, step, micro, world)
        idx = batch_indices(step, micro, cfg, stage.num_clips, world)
        with gradient_sync(opt.model, micro, cfg, world), autocast_for(cfg, world.device):
            loss = stage.loss(opt.model, stage.batch(step, idx, gen), gen)
            (loss / cfg.grad_accumulation).backward()
        total += loss.item() / cfg.grad_accumulation
    clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(opt.parameters(), clip)
    opt.optimizer.step()
    opt.scheduler.step()
    opt.update_ema()
    if not math.isfinite(total):
        raise FloatingPointError(f"train: loss became {total} at step {step}; lower the learning rate")
    return total, float(norm)


class RunFolder:
    """The run folder: checked writable before any work, and not left half-made by a failed fresh run.

    A run that fails before its first checkpoint removes the folder when it made it (else only what it
    wrote there), so no run folder holds a config and nothing else. The latent cache is kept: it is keyed
    by the MoVQ and the frames, and saves the next attempt the encoding.
    """

    def __init__(self, run_dir: Path, world: World) -> None:
        self.run_dir = run_dir
        self.world = world
        self.created = not run_dir.exists()

    def __enter__(self) -> RunFolder:
        check_writable_folder(self.run_dir, "out")
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.world.barrier()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None or not self.world.is_main or list_checkpoints(self.run_dir):
            return
        if self.created:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for name in ("train_config.json", "loss.csv", "text_encoder_init", "tensorboard"):
            path = self.run_dir / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
