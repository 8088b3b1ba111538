"""Batching items of one size, and aspect buckets (one buffer per size, a batch when one fills)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch.utils.data import IterableDataset

logger = logging.getLogger(__name__)


def collate_videos(items: Sequence[dict]) -> dict:
    """Stack same-size items into ``{"video": [B, F, 3, H, W], "caption": [str], "meta": [dict]}``."""
    if not items:
        raise ValueError("items: cannot collate an empty batch")
    shapes = {tuple(item["video"].shape) for item in items}
    if len(shapes) > 1:
        raise ValueError(
            f"items: videos of different shapes {sorted(shapes)}; batch them with bucket_batches"
        )
    return {
        "video": torch.stack([item["video"] for item in items]),
        "caption": [item["caption"] for item in items],
        "meta": [item["meta"] for item in items],
    }


def bucket_batches(samples: Iterable[dict], batch_size: int, drop_last: bool = False) -> Iterator[dict]:
    """Group a stream of items into collated batches of one video shape each.

    One buffer per shape; a batch is emitted as soon as its buffer is full, so each batch is formed from
    the next ``batch_size`` items of that bucket in stream order. Leftovers come last (unless ``drop_last``).
    Works inside a worker (see ``BucketBatches``) or on a DataLoader that yields single items.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    buffers: dict[tuple, list[dict]] = {}
    for item in samples:
        buffer = buffers.setdefault(tuple(item["video"].shape), [])
        buffer.append(item)
        if len(buffer) == batch_size:
            yield collate_videos(buffer)
            buffer.clear()
    if not drop_last:
        for buffer in buffers.values():
            if buffer:
                yield collate_videos(buffer)


class BucketBatches(IterableDataset):
    """Batches formed per worker from an iterable dataset; use with ``DataLoader(..., batch_size=None)``."""

    def __init__(self, dataset: Iterable[dict], batch_size: int, drop_last: bool = False) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[dict]:
        return bucket_batches(self.dataset, self.batch_size, self.drop_last)
