"""Checkpoints, the exported model, and the loss log of a run.

A checkpoint holds the training state (raw weights, EMA, optimizer, schedule, RNG, progress and the
config) and a usable model folder exported with the EMA weights. Under FSDP the full tensors are gathered
first (a collective) so the files have the same layout as a single process's.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fusionframes.components import ModelComponents, build_components
from fusionframes.io.checkpoints import load_model_folder, write_model_folder
from fusionframes.training.config import TrainConfig
from fusionframes.training.objectives import InterpolationObjective, KeyframeObjective
from fusionframes.training.optimisation import Optimisation
from fusionframes.training.stages import Stage, build_objective
from fusionframes.training.state import latest_checkpoint, rng_state, write_checkpoint
from fusionframes.training.world import World


def export_model(
    components: ModelComponents, objective: nn.Module, stage: Stage, path: Path, extra: dict | None = None
) -> None:
    """Write ``components`` (with ``objective``'s current weights in place) as a model folder.

    The trained U-Net's folder records how it expects to be sampled (its ``trained_with``: noise
    sharing, interpolation prediction, residual) and the size and keyframe count it was trained at.
    """
    config = components.config
    if isinstance(objective, KeyframeObjective):
        components.keyframe_null = objective.text.null_embedding.detach().clone()
        trained = dataclasses.replace(
            config.keyframe_unet.training, frame_noise_sharing=objective.noise_sharing
        )
        config = dataclasses.replace(
            config, keyframe_unet=dataclasses.replace(config.keyframe_unet, trained_with=trained)
        )
    if isinstance(objective, InterpolationObjective):
        components.interpolation_null = objective.null_embedding.detach().clone()
        trained = dataclasses.replace(
            config.interpolation_unet.training,
            interpolation_residual=objective.residual,
            prediction=objective.prediction,
        )
        config = dataclasses.replace(
            config, interpolation_unet=dataclasses.replace(config.interpolation_unet, trained_with=trained)
        )
    components.config = stage.exported_config(config)
    text_dir = None
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(objective, KeyframeObjective) and stage.cfg.text_encoder is None:
            text_dir = Path(tmp) / "text_encoder"
            objective.text.encoder.save_pretrained(str(text_dir))
            stage.tokenizer.save_pretrained(str(text_dir))
        elif Path(str(components.text_encoder)).is_dir():
            text_dir = Path(str(components.text_encoder))
        components.vocabulary = frozenset(components.vocabulary)
        write_model_folder(components, path, text_encoder_dir=text_dir, metadata=extra or {})


@dataclass
class Checkpointer:
    """Writes the run's checkpoints (rank 0 writes; every rank takes part in the gathers)."""

    run_dir: Path
    cfg: TrainConfig
    components: ModelComponents
    stage: Stage
    world: World

    def save(self, step: int, opt: Optimisation) -> None:
        if opt.sharded:
            self._save_sharded(step, opt)
            return
        objective = opt.objective
        # Clones: the EMA swap below writes into the parameters these tensors alias. A LoRA run keeps only
        # its adapter's tensors: the base is init_from's, unchanged.
        model_state = self._raw_state(objective)
        optim_state = opt.optimizer.state_dict()
        if not self.world.is_main:
            self.world.barrier()
            return
        ema_state = opt.ema.state_dict()
        # The usable model is exported with the EMA weights; the raw weights stay in state/.
        raw = self._raw_state(objective)
        opt.ema_into_objective()
        try:
            self._write(
                step, self.components, objective, (model_state, ema_state, optim_state, opt.scheduler)
            )
        finally:
            self._restore(objective, raw)
        self.world.barrier()

    def _raw_state(self, objective: nn.Module) -> dict:
        if self.cfg.lora_rank is not None:
            from fusionframes.lora.training import trainable_state

            return trainable_state(objective)
        return {k: v.detach().clone() for k, v in objective.state_dict().items()}

    def _restore(self, objective: nn.Module, raw: dict) -> None:
        if self.cfg.lora_rank is None:
            objective.load_state_dict(raw)
            return
        from fusionframes.lora.training import load_trainable_state

        load_trainable_state(objective, raw, "the raw weights")

    def _save_sharded(self, step: int, opt: Optimisation) -> None:
        """FSDP: gather full tensors (collective), then rank 0 writes the same layout as DDP.

        The exported model is built on plain (unsharded) copies of the trained networks holding the EMA
        weights; the networks the stage does not train were never sharded and are written as they are.
        """
        from fusionframes.training.fsdp import full_model_state, full_optimizer_state

        model_state = full_model_state(opt.objective)
        optim_state = full_optimizer_state(opt.objective, opt.optimizer)
        ema_state = opt.ema.full_state()
        if self.world.is_main:
            components = self.components
            plain = dataclasses.replace(components)
            fresh = build_components(components.config, components.text_encoder, components.name, "cpu")
            for name in self.stage.trained:
                setattr(plain, name, getattr(fresh, name))
            plain_objective, _ = build_objective(self.cfg, plain)
            prefix = "module."
            plain_objective.load_state_dict(
                {k[len(prefix) :]: v for k, v in ema_state.items() if k.startswith(prefix)}
            )
            self._write(step, plain, plain_objective, (model_state, ema_state, optim_state, opt.scheduler))
        self.world.barrier()

    def _write(self, step: int, components: ModelComponents, objective: nn.Module, states: tuple) -> None:
        """One checkpoint: the training state, and the model exported from ``objective``'s current weights."""
        model_state, ema_state, optim_state, scheduler = states
        cfg = self.cfg
        state = {
            "objective": model_state,
            "ema": ema_state,
            "optimizer": optim_state,
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "progress": {"step": step, "stage": cfg.stage, "config": cfg.to_dict()},
        }
        extra = {"training": {"stage": cfg.stage, "step": step}}
        export = lambda path: export_model(components, objective, self.stage, path, extra)  # noqa: E731
        if cfg.lora_rank is not None:
            from fusionframes.lora.training import export_adapter

            export = lambda path: export_adapter(objective, cfg, components.name, path, extra)  # noqa: E731
        write_checkpoint(self.run_dir, step, export, state, keep=cfg.keep_checkpoints, artifact=self.artifact)

    @property
    def artifact(self) -> str:
        """What a checkpoint exports: ``model`` (a model folder) or, for a LoRA run, ``adapter``."""
        return "adapter" if self.cfg.lora_rank is not None else "model"

    def publish_final_model(self) -> None:
        """Copy the newest checkpoint's model (or adapter) folder to ``run_dir/model`` (``adapter``)."""
        final = latest_checkpoint(self.run_dir)
        if final is None:
            return
        target = self.run_dir / self.artifact
        tmp = self.run_dir / f".{self.artifact}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(final / self.artifact, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)


class LossLog:
    """``loss.csv`` (and TensorBoard when installed) on rank 0; a resumed run drops rows past its step."""

    HEADER = "step,loss,lr,grad_norm,seconds\n"

    def __init__(self, run_dir: Path, start_step: int, world: World) -> None:
        self.path = run_dir / "loss.csv"
        self.active = world.is_main
        self.writer = None
        if not self.active:
            return
        if start_step == 0 or not self.path.exists():
            self.path.write_text(self.HEADER)
        if start_step > 0:
            self._truncate(start_step)
        self.writer = _tensorboard(run_dir)

    def _truncate(self, step: int) -> None:
        lines = self.path.read_text().splitlines()
        kept = [lines[0]] + [line for line in lines[1:] if line and int(line.split(",")[0]) < step]
        self.path.write_text("\n".join(kept) + "\n")

    def row(self, step: int, loss: float, lr: float, grad_norm: float, seconds: float) -> None:
        if not self.active:
            return
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow(
                [step, f"{loss:.6f}", f"{lr:.3e}", f"{grad_norm:.4f}", f"{seconds:.3f}"]
            )
        if self.writer is not None:
            self.writer.add_scalar("loss", loss, step)
            self.writer.add_scalar("lr", lr, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def write_samples(run_dir: Path, step: int, cfg: TrainConfig) -> None:
    """A short sample video per prompt from the latest checkpoint (keyframe and interpolation stages)."""
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None or cfg.stage == "movq":
        return
    from fusionframes.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline(load_model_folder(checkpoint / "model"), device="cpu", dtype="float32")
    folder = run_dir / "samples"
    folder.mkdir(exist_ok=True)
    for i, prompt in enumerate(cfg.sample_prompts):
        fps = "low" if cfg.stage == "keyframes" else "medium"
        video = pipe(prompt, fps=fps, seed=i, num_inference_steps=20, output_type="np", progress=False)
        video.save(folder / f"step{step:08d}-{i}.gif")
