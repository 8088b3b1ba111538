"""The training loop for every stage, in plain PyTorch: single process, or DDP/FSDP under torchrun.

Reproducibility: the noise, timesteps and dropout of step ``s`` come from a generator seeded by
(seed, step, rank), and the data order from a permutation seeded by (seed, epoch). Resuming from a
checkpoint therefore replays exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from fusionframes.components import (
    KEYFRAME_EXTENSIONS,
    ModelComponents,
    build_components,
    load_allowing_extensions,
    with_keyframe_extensions,
)
from fusionframes.config import ModelConfig, preset, small_config
from fusionframes.io.checkpoints import load_model_folder, write_model_folder
from fusionframes.text.tokenizer import make_text_encoder_folder
from fusionframes.training.augment import reverse_caption, reverse_some
from fusionframes.training.config import TrainConfig
from fusionframes.training.ema import warmup_ema
from fusionframes.training.objectives import (
    InterpolationObjective,
    KeyframeObjective,
    MoVQObjective,
    TextEncoding,
)
from fusionframes.training.state import (
    latest_checkpoint,
    read_checkpoint_state,
    rng_state,
    set_rng_state,
    write_checkpoint,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Distributed set-up


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_world() -> World:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, device)


# ---------------------------------------------------------------------------------------------
# Data


def captions_of(dataset: Any, limit: int = 100_000) -> list[str]:
    out = []
    for i, item in enumerate(dataset):
        if i >= limit:
            break
        out.append(item["caption"])
    return out


def load_clips(data: str | Path, cfg: TrainConfig, world: World) -> list[dict]:
    """Read every clip of this rank's share once (the synthetic and fine-tuning sets fit in memory)."""
    from fusionframes.training.data import make_dataset

    dataset = make_dataset(data, num_frames=cfg.clip_frames, size=cfg.size)
    clips = []
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=cfg.num_workers, persistent_workers=False
    )
    for item in tqdm(loader, desc="reading clips", disable=not world.is_main, leave=False):
        clips.append({"video": item["video"].to(torch.float16), "caption": item["caption"]})
    skipped = getattr(dataset, "skipped", None)
    if skipped:
        logger.warning("data: skipped clips: %s", dict(skipped))
    if not clips:
        raise ValueError(f"data: no usable clips in {data}")
    return clips


def latent_frame_step(cfg: TrainConfig) -> int:
    """Keyframe windows start on multiples of the stride, so that stage encodes only every stride-th frame."""
    return cfg.keyframe_stride if cfg.stage == "keyframes" else 1


@torch.no_grad()
def encode_clips(
    movq: nn.Module, clips: list[dict], device: torch.device, show: bool, frame_step: int = 1
) -> list[torch.Tensor]:
    """MoVQ latents of every ``frame_step``-th frame of every clip, once per stage (the MoVQ is frozen)."""
    movq.eval()
    latents = []
    for clip in tqdm(clips, desc="encoding latents", disable=not show, leave=False):
        frames = clip["video"][::frame_step].to(device, torch.float32)
        latents.append(torch.cat([movq.encode(chunk).cpu() for chunk in frames.split(32)]))
    return latents


def cached_latents(
    path: Path, movq: nn.Module, clips: list[dict], device: torch.device, show: bool, frame_step: int
) -> list[torch.Tensor]:
    """Latents from ``path`` if written for this MoVQ, these clips and frame step; else encode and save.

    Encoding is the slow part of starting a diffusion stage on a CPU; a resumed run skips it. The key
    hashes the frames themselves, not only the captions: two data sets may share every caption (the
    synthetic world with and without ``--path-jitter``) and differ only in the pictures.
    """
    from safetensors.torch import load_file, safe_open, save_file

    digest = hashlib.sha256()
    for name, tensor in sorted(movq.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    digest.update(json.dumps([c["caption"] for c in clips]).encode())
    for clip in clips:
        digest.update(clip["video"][::frame_step].contiguous().numpy().tobytes())
    key = f"{digest.hexdigest()}-{frame_step}"
    if path.is_file():
        with safe_open(str(path), "pt") as handle:
            same = (handle.metadata() or {}).get("key") == key
        if same:
            loaded = load_file(str(path))
            return [loaded[f"clip{i}"] for i in range(len(clips))]
    latents = encode_clips(movq, clips, device, show, frame_step)
    tmp = path.with_suffix(".tmp")
    save_file(
        {f"clip{i}": lat.contiguous() for i, lat in enumerate(latents)}, str(tmp), metadata={"key": key}
    )
    os.replace(tmp, path)
    return latents


def epoch_order(n: int, epoch: int, seed: int, world: World) -> list[int]:
    """This rank's share of a (seed, epoch)-seeded permutation of ``n`` items."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    return order[world.rank :: world.size] or order


def batch_indices(step: int, micro: int, cfg: TrainConfig, n: int, world: World) -> list[int]:
    """Indices of the clips used by micro-batch ``micro`` of step ``step`` (deterministic)."""
    per_step = cfg.batch_size * cfg.grad_accumulation
    share = max(1, math.ceil(n / world.size))
    epoch, offset = divmod(step * per_step + micro * cfg.batch_size, share)
    order = epoch_order(n, epoch, cfg.seed, world)
    return [order[(offset + i) % len(order)] for i in range(cfg.batch_size)]


def step_generator(cfg: TrainConfig, step: int, micro: int, world: World) -> torch.Generator:
    return torch.Generator().manual_seed(((cfg.seed * 7919 + step) * 131 + micro) * 64 + world.rank)


def movq_batch(clips: list[dict], idx: list[int], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    frames = []
    for i in idx:
        video = clips[i]["video"]
        frames.append(video[int(torch.randint(0, video.shape[0], (1,), generator=gen))])
    return torch.stack(frames).to(device, torch.float32)


def keyframe_batch(
    latents: list[torch.Tensor], idx: list[int], cfg: TrainConfig, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``[B, F, C, h, w]`` keyframe windows; ``latents`` hold every ``keyframe_stride``-th frame."""
    out = []
    for i in idx:
        lat = latents[i]
        start = int(torch.randint(0, lat.shape[0] - cfg.num_keyframes + 1, (1,), generator=gen))
        out.append(lat[start : start + cfg.num_keyframes])
    return torch.stack(out).to(device, torch.float32)


def interpolation_batch(
    latents: list[torch.Tensor],
    idx: list[int],
    stride: int,
    cfg: TrainConfig,
    gen: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """``[B, G, 5, C, h, w]``: G consecutive (left, 3 middle, right) groups at ``stride`` per clip."""
    length = min(lat.shape[0] for lat in (latents[i] for i in idx))
    groups = min(cfg.num_keyframes - 1, (length - 1) // (4 * stride))
    if groups < 1:
        raise ValueError(f"clip_frames: clips of {length} frames are too short for stride {stride}")
    span = 4 * stride * groups + 1
    out = []
    for i in idx:
        lat = latents[i]
        start = int(torch.randint(0, lat.shape[0] - span + 1, (1,), generator=gen))
        frames = lat[start : start + span : stride]  # 4G + 1 frames
        out.append(torch.stack([frames[4 * k : 4 * k + 5] for k in range(groups)]))
    return torch.stack(out).to(device, torch.float32)


# ---------------------------------------------------------------------------------------------
# Model set-up


def model_config(cfg: TrainConfig) -> ModelConfig:
    if isinstance(cfg.model, dict):
        return ModelConfig.from_dict(cfg.model)
    if cfg.model == "small":
        return small_config(**cfg.model_overrides)
    return preset(str(cfg.model))


def is_training_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "state" / "COMPLETE").is_file() and (Path(path) / "model").is_dir()


def prepare_components(cfg: TrainConfig, clips: list[dict], run_dir: Path, world: World) -> ModelComponents:
    """Start from ``init_from`` or fresh weights; make a small T5 from the captions when none is given.

    ``init_from`` may be a training checkpoint: its model folder is loaded here and :func:`train` then
    puts the checkpoint's raw (non-EMA) weights in place, to continue a run under a new config.
    """
    if cfg.init_from:
        source = Path(cfg.init_from)
        return load_model_folder(source / "model" if is_training_checkpoint(source) else source)
    text_encoder = cfg.text_encoder
    if text_encoder is None:
        text_encoder = run_dir / "text_encoder_init"
        if world.is_main and not (text_encoder / "config.json").is_file():
            spec = cfg.new_text_encoder
            tmp = Path(tempfile.mkdtemp(dir=run_dir))
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
            os.replace(tmp / "t5", text_encoder)
            shutil.rmtree(tmp, ignore_errors=True)
        world.barrier()
    torch.manual_seed(cfg.seed)
    config = model_config(cfg)
    return build_components(config, text_encoder, name=f"fusionframes-{cfg.stage}")


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


def load_text_encoder(components: ModelComponents):
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(str(components.text_encoder))
    encoder = T5EncoderModel.from_pretrained(str(components.text_encoder))
    return tokenizer, encoder


TRAINED = {  # the ModelComponents networks each stage trains (the keyframe stage also the small T5)
    "movq": ("movq",),
    "interpolation": ("interpolation_unet",),
    "keyframes": ("keyframe_unet", "projection"),
}


def build_objective(cfg: TrainConfig, components: ModelComponents) -> tuple[nn.Module, Any]:
    """The trained module for the stage (and the tokenizer for the keyframe stage).

    Loaded components come frozen (inference mode); only what this stage trains is unfrozen here.
    """
    for module in components.networks().values():
        module.requires_grad_(False)
    for name in TRAINED[cfg.stage]:
        getattr(components, name).requires_grad_(True)
    if cfg.stage == "movq":
        return MoVQObjective(components.movq, cfg.movq_latent_weight), None
    if cfg.stage == "interpolation":
        return InterpolationObjective(
            components.interpolation_unet,
            components.interpolation_null,
            cfg.diffusion_steps,
            cfg.keyframe_dropout,
            cfg.interpolation_residual,
            cfg.interpolation_prediction,
        ), None
    tokenizer, encoder = load_text_encoder(components)
    trainable_text = cfg.train_text_encoder and cfg.text_encoder is None
    encoder.requires_grad_(trainable_text)
    text = TextEncoding(encoder, components.projection, components.keyframe_null)
    objective = KeyframeObjective(
        components.keyframe_unet,
        text,
        cfg.diffusion_steps,
        cfg.text_dropout,
        cfg.frame_noise_sharing,
        cfg.snr_gamma,
        cfg.noisy_weight_max,
        cfg.keyframe_prediction,
    )
    return objective, tokenizer


def select_trainable(objective: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Parameter groups; ``freeze_spatial``: only the U-Net's temporal layers learn; ``freeze_encoder``:
    only the MoVQ decoder learns."""
    unet_params, text_params = [], []
    for name, param in objective.named_parameters():
        if cfg.freeze_spatial and name.startswith("unet.") and "temporal" not in name:
            param.requires_grad_(False)
        if cfg.freeze_encoder and name.startswith(("movq.encoder.", "movq.quant_conv.")):
            param.requires_grad_(False)
        if not param.requires_grad:
            continue
        (text_params if name.startswith("text.") else unet_params).append(param)
    groups = [{"params": unet_params, "lr": cfg.learning_rate}]
    if text_params:
        groups.append({"params": text_params, "lr": cfg.text_learning_rate or cfg.learning_rate})
    return groups


def lr_lambda(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def autocast_for(cfg: TrainConfig, device: torch.device):
    if cfg.precision in ("float32",):
        return nullcontext()
    if cfg.precision == "auto":
        from fusionframes.runtime import resolve_dtype

        dtype = resolve_dtype("auto", device).dtype
        if dtype == torch.float32:
            return nullcontext()
    else:
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.precision]
    return torch.autocast(device.type, dtype=dtype)


def wrap_parallel(objective: nn.Module, cfg: TrainConfig, world: World) -> nn.Module:
    if world.size == 1:
        return objective
    if cfg.parallel == "fsdp":
        from fusionframes.training.fsdp import shard

        return shard(objective)
    from torch.nn.parallel import DistributedDataParallel

    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(objective, device_ids=ids)


# ---------------------------------------------------------------------------------------------
# The loop


def export_model(
    components: ModelComponents,
    objective: nn.Module,
    tokenizer: Any,
    path: Path,
    cfg: TrainConfig,
    extra: dict | None = None,
) -> None:
    """Write ``components`` (with ``objective``'s current weights in place) as a model folder."""
    # the exported folder must tell the pipeline how its trained network expects to be sampled
    sampling = components.config.sampling
    if isinstance(objective, KeyframeObjective):
        components.keyframe_null = objective.text.null_embedding.detach().clone()
        sampling = dataclasses.replace(
            sampling, frame_noise_sharing=objective.noise_sharing, keyframe_prediction=objective.prediction
        )
    if isinstance(objective, InterpolationObjective):
        components.interpolation_null = objective.null_embedding.detach().clone()
        sampling = dataclasses.replace(
            sampling, interpolation_residual=objective.residual, interpolation_prediction=objective.prediction
        )
    components.config = dataclasses.replace(components.config, sampling=sampling)
    vocabulary = set(components.vocabulary)
    text_dir = None
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(objective, KeyframeObjective) and cfg.text_encoder is None:
            text_dir = Path(tmp) / "text_encoder"
            objective.text.encoder.save_pretrained(str(text_dir))
            tokenizer.save_pretrained(str(text_dir))
        elif Path(str(components.text_encoder)).is_dir():
            text_dir = Path(str(components.text_encoder))
        components.vocabulary = frozenset(vocabulary)
        write_model_folder(components, path, text_encoder_dir=text_dir, metadata=extra or {})


def train(
    cfg: TrainConfig,
    data: str | Path,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) one stage; returns a summary with the loss history of this process."""
    world = init_world()
    run_dir = Path(out)
    if resume and latest_checkpoint(run_dir) is None:
        raise FileNotFoundError(f"resume: no complete checkpoint under {run_dir / 'checkpoints'}")
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    world.barrier()

    clips = load_clips(data, cfg, world)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint:
        components = load_model_folder(checkpoint / "model")
        components.text_encoder = stable_text_encoder(components.text_encoder, run_dir, world)
    else:
        components = prepare_components(cfg, clips, run_dir, world)
    extensions = [name for name in KEYFRAME_EXTENSIONS if getattr(cfg, name)]
    if extensions:
        components = with_keyframe_extensions(components, *extensions)
    components.vocabulary = frozenset(components.vocabulary) | _caption_words(clips)
    objective, tokenizer = build_objective(cfg, components)
    objective.to(world.device).train()
    if cfg.gradient_checkpointing and hasattr(objective, "unet"):
        objective.unet.gradient_checkpointing = True

    latents = None
    if cfg.stage != "movq":
        movq = components.movq.to(world.device)
        show = world.is_main and progress
        cache = run_dir / f"latents-rank{world.rank}.safetensors"
        latents = cached_latents(cache, movq, clips, world.device, show, latent_frame_step(cfg))
        components.movq.cpu()
        for clip in clips:  # the diffusion stages train on latents only; free the frames
            del clip["video"]
    tokens = None
    if tokenizer is not None:
        captions = [c["caption"] for c in clips]
        tokens = caption_tokens(
            tokenizer,
            captions,
            components.config.text.max_length,
            cfg.time_reversal > 0,
        )

    state = read_checkpoint_state(checkpoint) if checkpoint is not None else None
    if state is None and cfg.init_from and is_training_checkpoint(cfg.init_from):
        _load_raw_weights(objective, Path(cfg.init_from), cfg.stage)
    groups = select_trainable(objective, cfg)
    if sharded(cfg, world):
        # FSDP: shard first, then build the optimizer and the EMA on the shards.
        from fusionframes.training.ema import ShardedEMA
        from fusionframes.training.fsdp import load_optimizer_state

        if state is not None:
            objective.load_state_dict(state["objective"])
        model = wrap_parallel(objective, cfg, world)
        groups = select_trainable(objective, cfg)
        optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        ema: Any = ShardedEMA(objective, cfg.ema_decay)
        if state is not None:
            load_optimizer_state(objective, optimizer, state["optimizer"])
            ema.load_full(state["ema"])
        update_ema = ema.update
    else:
        optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        ema = torch.optim.swa_utils.AveragedModel(
            objective, multi_avg_fn=warmup_ema(cfg.ema_decay), use_buffers=True
        )
        if state is not None:
            objective.load_state_dict(state["objective"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
        model = wrap_parallel(objective, cfg, world)
        update_ema = ema.update_parameters
    start_step = 0
    if state is not None:
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start_step = int(state["progress"]["step"])
        logger.info("resumed from %s at step %d", checkpoint, start_step)

    log_path = run_dir / "loss.csv"
    if world.is_main and (start_step == 0 or not log_path.exists()):
        log_path.write_text("step,loss,lr,grad_norm,seconds\n")
    if world.is_main and start_step > 0:
        _truncate_log(log_path, start_step)
    writer = _tensorboard(run_dir) if world.is_main else None
    history: list[tuple[int, float]] = []
    strides = {int(k): int(v) for k, v in cfg.interpolation_strides.items()}
    n = len(clips)
    end = min(cfg.max_steps, cfg.stop_after or cfg.max_steps)
    bar = tqdm(
        range(start_step, end),
        desc=f"train {cfg.stage}",
        disable=not (progress and world.is_main),
        initial=start_step,
        total=cfg.max_steps,
    )
    for step in bar:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(cfg.grad_accumulation):
            gen = step_generator(cfg, step, micro, world)
            idx = batch_indices(step, micro, cfg, n, world)
            sync = micro == cfg.grad_accumulation - 1 or world.size == 1 or cfg.parallel == "fsdp"
            with nullcontext() if sync else model.no_sync(), autocast_for(cfg, world.device):
                loss = _stage_loss(cfg, model, clips, latents, tokens, idx, gen, strides, step, world.device)
                (loss / cfg.grad_accumulation).backward()
            total += loss.item() / cfg.grad_accumulation
        params = [p for g in groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        optimizer.step()
        scheduler.step()
        update_ema(objective)
        if not math.isfinite(total):
            raise FloatingPointError(f"train: loss became {total} at step {step}; lower the learning rate")
        history.append((step, total))
        done = step + 1
        if world.is_main:
            seconds = time.perf_counter() - started
            with open(log_path, "a", newline="") as handle:
                csv.writer(handle).writerow(
                    [
                        step,
                        f"{total:.6f}",
                        f"{scheduler.get_last_lr()[0]:.3e}",
                        f"{float(norm):.4f}",
                        f"{seconds:.3f}",
                    ]
                )
            if writer is not None:
                writer.add_scalar("loss", total, step)
                writer.add_scalar("lr", scheduler.get_last_lr()[0], step)
            bar.set_postfix(loss=f"{total:.4f}")
        if done % cfg.checkpoint_every == 0 or done == end:
            _save(run_dir, done, cfg, components, objective, ema, optimizer, scheduler, tokenizer, world)
        if cfg.sample_every and done % cfg.sample_every == 0 and world.is_main:
            _write_samples(run_dir, done, cfg)
    world.barrier()
    if world.is_main and end > start_step:
        final = latest_checkpoint(run_dir)
        if final is not None:
            target = run_dir / "model"
            tmp = run_dir / ".model.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(final / "model", tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    world.barrier()  # every rank returns only once the final model folder exists
    if writer is not None:
        writer.close()
    return {"history": history, "run_dir": str(run_dir), "world_size": world.size}


def _load_raw_weights(objective: nn.Module, checkpoint: Path, stage: str) -> None:
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


def caption_tokens(
    tokenizer: Any,
    captions: list[str],
    max_length: int,
    with_reversed: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and masks of every caption; ``with_reversed`` appends the reversed captions (rows
    n..2n-1), all padded to one length."""
    if with_reversed:
        captions = captions + [reverse_caption(c) for c in captions]
    batch = tokenizer(
        captions, max_length=max_length, truncation=True, padding="longest", return_tensors="pt"
    )
    return batch["input_ids"], batch["attention_mask"]


def _caption_words(clips: list[dict]) -> frozenset[str]:
    from fusionframes.text.tokenizer import words

    out: set[str] = set()
    for clip in clips:
        out |= words(clip["caption"])
    return frozenset(out)


def _stage_loss(cfg, model, clips, latents, tokens, idx, gen, strides, step, device) -> torch.Tensor:
    if cfg.stage == "movq":
        return model(movq_batch(clips, idx, gen, device), gen)
    if cfg.stage == "keyframes":
        batch = keyframe_batch(latents, idx, cfg, gen, device)
        text = tuple(t[idx] for t in tokens)
        flip = torch.zeros(len(idx), dtype=torch.bool)
        if cfg.time_reversal:  # tokens[n:] are the reversed captions of clips 0..n-1
            flip = torch.rand(len(idx), generator=gen) < cfg.time_reversal
            reversed_text = tuple(t[[i + len(clips) for i in idx]] for t in tokens)
            batch, text = reverse_some(batch, text, reversed_text, flip.to(batch.device))
        ids, mask = text
        return model(batch, ids.to(device), mask.to(device), gen)
    codes = sorted(strides)
    code = codes[step % len(codes)]
    return model(interpolation_batch(latents, idx, strides[code], cfg, gen, device), code, gen)


def sharded(cfg: TrainConfig, world: World) -> bool:
    return cfg.parallel == "fsdp" and world.size > 1


def _save(run_dir, step, cfg, components, objective, ema, optimizer, scheduler, tokenizer, world) -> None:
    if sharded(cfg, world):
        _save_sharded(run_dir, step, cfg, components, objective, ema, optimizer, scheduler, tokenizer, world)
        return
    # Clones: the EMA swap below writes into the parameters these tensors alias.
    model_state = {k: v.detach().clone() for k, v in objective.state_dict().items()}
    optim_state = optimizer.state_dict()
    if not world.is_main:
        world.barrier()
        return
    ema_state = ema.state_dict()
    # The usable model is exported with the EMA weights; the raw weights stay in state/.
    raw = {k: v.detach().clone() for k, v in objective.state_dict().items()}
    objective.load_state_dict(ema.module.state_dict())
    try:
        states = (model_state, ema_state, optim_state, scheduler)
        _write(run_dir, step, cfg, components, objective, tokenizer, states)
    finally:
        objective.load_state_dict(raw)
    world.barrier()


def _save_sharded(run_dir, step, cfg, components, objective, ema, optimizer, scheduler, tokenizer, world):
    """FSDP checkpoint: gather full tensors (collective), then rank 0 writes the same layout as DDP.

    The exported model is built on plain (unsharded) copies of the trained networks holding the EMA
    weights; the networks the stage does not train were never sharded and are written as they are.
    """
    from fusionframes.training.fsdp import full_model_state, full_optimizer_state

    model_state = full_model_state(objective)
    optim_state = full_optimizer_state(objective, optimizer)
    ema_state = ema.full_state()
    if world.is_main:
        plain = dataclasses.replace(components)
        fresh = build_components(components.config, components.text_encoder, components.name, "cpu")
        for name in TRAINED[cfg.stage]:
            setattr(plain, name, getattr(fresh, name))
        plain_objective, _ = build_objective(cfg, plain)
        prefix = "module."
        plain_objective.load_state_dict(
            {k[len(prefix) :]: v for k, v in ema_state.items() if k.startswith(prefix)}
        )
        states = (model_state, ema_state, optim_state, scheduler)
        _write(run_dir, step, cfg, plain, plain_objective, tokenizer, states)
    world.barrier()


def _write(run_dir, step, cfg, components, objective, tokenizer, states) -> None:
    """One checkpoint: the training state, and the model exported from ``objective``'s current weights."""
    model_state, ema_state, optim_state, scheduler = states
    state = {
        "objective": model_state,
        "ema": ema_state,
        "optimizer": optim_state,
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "progress": {"step": step, "stage": cfg.stage},
    }
    extra = {"training": {"stage": cfg.stage, "step": step}}
    write_checkpoint(
        run_dir,
        step,
        lambda path: export_model(components, objective, tokenizer, path, cfg, extra),
        state,
        keep=cfg.keep_checkpoints,
    )


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows past the resumed step (they were written after the checkpoint we resume from)."""
    lines = path.read_text().splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if line and int(line.split(",")[0]) < step]
    path.write_text("\n".join(kept) + "\n")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _write_samples(run_dir: Path, step: int, cfg: TrainConfig) -> None:
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
