"""The clips a run trains on, read once, and which of them each step uses.

Reproducibility: the noise, timesteps and dropout of step ``s`` come from a generator seeded by
(seed, step, micro-batch, rank), and the data order from a permutation seeded by (seed, epoch). A resumed
run therefore replays exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from fusionframes.synthetic import reverse_caption
from fusionframes.training.config import TrainConfig
from fusionframes.training.world import World

logger = logging.getLogger(__name__)

Clip = dict[str, Any]  # {"video": float16 [F, 3, H, W] (freed once encoded), "caption": str}


def load_clips(data: str | Path, cfg: TrainConfig, world: World) -> list[Clip]:
    """Read every clip of this rank's share once (the synthetic and fine-tuning sets fit in memory)."""
    from fusionframes.training.data import NoUsableClips, make_dataset

    dataset = make_dataset(data, num_frames=cfg.clip_frames, size=cfg.size)
    clips = []
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=cfg.num_workers, persistent_workers=False
    )
    try:
        for item in tqdm(loader, desc="reading clips", disable=not world.is_main, leave=False):
            clips.append({"video": item["video"].to(torch.float16), "caption": item["caption"]})
    except NoUsableClips as error:  # a folder dataset whose every video was skipped
        raise ValueError(no_clips_message(data, error.counts, cfg.clip_frames)) from None
    skipped = dict(getattr(dataset, "skipped", None) or {})
    if skipped:
        logger.warning("data: skipped clips: %s", skipped)
    if not clips:
        raise ValueError(no_clips_message(data, skipped, cfg.clip_frames))
    return clips


def no_clips_message(data: str | Path, skipped: dict[str, int], clip_frames: int) -> str:
    """Why nothing was usable: clips too short for ``clip_frames`` are named as such (the common case)."""
    text = f"data: no usable clips in {data}"
    short = skipped.get("too_short", 0)
    if short:
        text += (
            f"; {short} clip(s) are shorter than clip_frames={clip_frames} "
            "(lower clip_frames, or use longer clips)"
        )
    others = {k: v for k, v in skipped.items() if k != "too_short"}
    if others:
        text += "; skipped: " + ", ".join(f"{v} {k}" for k, v in sorted(others.items()))
    return text


def latent_frame_step(cfg: TrainConfig) -> int:
    """Keyframe windows start on multiples of the stride, so that stage encodes only every stride-th frame."""
    return cfg.keyframe_stride if cfg.stage == "keyframes" else 1


@torch.no_grad()
def encode_clips(
    movq: nn.Module, clips: list[Clip], device: torch.device, show: bool, frame_step: int = 1
) -> list[torch.Tensor]:
    """MoVQ latents of every ``frame_step``-th frame of every clip, once per stage (the MoVQ is frozen)."""
    movq.eval()
    latents = []
    for clip in tqdm(clips, desc="encoding latents", disable=not show, leave=False):
        frames = clip["video"][::frame_step].to(device, torch.float32)
        latents.append(torch.cat([movq.encode(chunk).cpu() for chunk in frames.split(32)]))
    return latents


def cached_latents(
    path: Path, movq: nn.Module, clips: list[Clip], device: torch.device, show: bool, frame_step: int
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


def caption_tokens(
    tokenizer: Any, captions: list[str], max_length: int, with_reversed: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and masks of every caption; ``with_reversed`` appends the reversed captions (rows
    n..2n-1), all padded to one length."""
    if with_reversed:
        captions = captions + [reverse_caption(c) for c in captions]
    batch = tokenizer(
        captions, max_length=max_length, truncation=True, padding="longest", return_tensors="pt"
    )
    return batch["input_ids"], batch["attention_mask"]


def caption_words(clips: list[Clip]) -> frozenset[str]:
    from fusionframes.text.tokenizer import words

    out: set[str] = set()
    for clip in clips:
        out |= words(clip["caption"])
    return frozenset(out)
