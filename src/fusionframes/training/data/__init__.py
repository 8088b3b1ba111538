"""Captioned-video datasets for training: WebDataset tar shards, or a folder of videos with a captions file.

Every item follows one contract, whatever the source::

    {"video": torch.float32 [F, 3, H, W] in [-1, 1], "caption": str, "meta": dict}

Real-world video collections are messy, so bad samples (unreadable, zero-length or corrupt videos, missing
captions, clips shorter than the frames asked for) are skipped and counted per reason in a ``SkipCounter``
instead of crashing an epoch hours in. The counter lives in shared memory, so skips seen by DataLoader
worker processes add up in ``dataset.skipped`` in the parent process.

Batching: items of one size stack with ``collate_videos``. With aspect ``buckets`` the sizes differ, so
batch with ``bucket_batches`` (or the ``BucketBatches`` wrapper), which keeps one buffer per bucket and
emits a batch whenever a buffer holds ``batch_size`` items; every batch is therefore a single size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fusionframes.training.data.batching import BucketBatches, bucket_batches, collate_videos
from fusionframes.training.data.decode import (
    VIDEO_KEYS,
    ClipSampling,
    Size,
    decode_clip,
    make_sampling,
    to_video_tensor,
)
from fusionframes.training.data.folders import CAPTION_FILE_EXTS, FolderVideos
from fusionframes.training.data.shards import WebDatasetVideos, assign_shards, iter_tar_samples
from fusionframes.training.data.skips import SKIP_REASONS, NoUsableClips, SkipCounter, SkipSample

__all__ = [
    "BucketBatches",
    "CAPTION_FILE_EXTS",
    "ClipSampling",
    "FolderVideos",
    "SKIP_REASONS",
    "Size",
    "NoUsableClips",
    "SkipCounter",
    "SkipSample",
    "VIDEO_KEYS",
    "WebDatasetVideos",
    "assign_shards",
    "bucket_batches",
    "collate_videos",
    "decode_clip",
    "iter_tar_samples",
    "make_dataset",
    "make_sampling",
    "to_video_tensor",
]


def make_dataset(
    path: str | os.PathLike[str], num_frames: int, size: int | Size | None = None, **kwargs: Any
) -> WebDatasetVideos | FolderVideos:
    """Pick the dataset type from what ``path`` holds: *.tar shards -> WebDataset, captions csv/jsonl ->
    folder of videos. ``path`` may also be a single .tar, or the captions file itself. Extra keyword
    arguments go to the chosen class (e.g. ``frame_stride``, ``sample_fps``, ``buckets``, ``seed``).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data: '{p}' does not exist")
    if p.is_file():
        return _dataset_for_file(p, num_frames, size, kwargs)
    entries = list(p.iterdir())
    if not entries:
        raise ValueError(
            f"data: folder '{p}' is empty; expected *.tar WebDataset shards or videos + captions"
        )
    if any(e.suffix.lower() == ".tar" and e.is_file() for e in entries):
        return WebDatasetVideos(p, num_frames, size, **kwargs)
    if any(e.suffix.lower() in CAPTION_FILE_EXTS and e.is_file() for e in entries):
        return FolderVideos(p, None, num_frames, size, **kwargs)
    raise ValueError(
        f"data: folder '{p}' holds neither *.tar WebDataset shards nor a captions .csv/.jsonl; "
        "expected one of those (a folder of videos needs a captions file beside them)"
    )


def _dataset_for_file(
    p: Path, num_frames: int, size: int | Size | None, kwargs: dict[str, Any]
) -> WebDatasetVideos | FolderVideos:
    if p.suffix.lower() == ".tar":
        return WebDatasetVideos(p, num_frames, size, **kwargs)
    if p.suffix.lower() in CAPTION_FILE_EXTS:
        return FolderVideos(p.parent, p, num_frames, size, **kwargs)
    raise ValueError(f"data: file '{p.name}' is neither a .tar shard nor a .csv/.jsonl captions file")
