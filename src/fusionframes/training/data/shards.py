"""WebDataset tar shards: reading samples, assigning shards to ranks and workers, and the dataset."""

from __future__ import annotations

import json
import logging
import os
import random
import tarfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from fusionframes.training.data.decode import VIDEO_KEYS, Size, decode_clip, make_sampling, to_video_tensor
from fusionframes.training.data.skips import SkipCounter, SkipSample

logger = logging.getLogger(__name__)

CAPTION_JSON_KEYS = ("caption", "text")


def _expand_urls(urls_or_dir: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    """A folder (its *.tar files), one tar, a brace pattern ``shard-{000..009}.tar``, or a list of these."""
    if isinstance(urls_or_dir, (list, tuple)):
        urls = [u for item in urls_or_dir for u in _expand_urls(item)]
    else:
        raw = os.fspath(urls_or_dir)
        path = Path(raw).expanduser()
        if path.is_dir():
            urls = [str(p) for p in sorted(path.glob("*.tar"))]
            if not urls:
                raise ValueError(f"urls_or_dir: folder '{path}' holds no *.tar WebDataset shards")
        elif "{" in raw:
            from braceexpand import braceexpand

            urls = [u for pattern in braceexpand(raw) for u in _expand_urls(pattern)]
        elif _is_local(raw) and not path.exists():
            raise FileNotFoundError(f"urls_or_dir: '{path}' does not exist")
        else:
            urls = [str(path) if _is_local(raw) else raw]
    if not urls:
        raise ValueError("urls_or_dir: no shards given")
    return urls


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def _open_shard(url: str):
    if _is_local(url):
        return open(url, "rb")
    import webdataset

    return webdataset.gopen(url)


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset naming: ``dir/key.ext1.ext2`` -> (``dir/key``, ``ext1.ext2``)."""
    folder, _, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return (f"{folder}/{key}" if folder else key), ext.lower()


def iter_tar_samples(url: str) -> Iterator[dict]:
    """Stream ``{"__key__": ..., ext: bytes}`` groups from one tar (members of a sample are adjacent)."""
    current: dict[str, Any] = {}
    with _open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = _split_key(member.name)
            if key.rpartition("/")[2].startswith(".") or not ext:
                continue  # hidden files (e.g. macOS "._x") and extension-less members are not samples
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            f = tar.extractfile(member)
            current[ext] = f.read() if f is not None else b""
    if current:
        yield current


def _caption_from_sample(sample: dict) -> tuple[str, dict]:
    meta: dict = {}
    caption = ""
    if "json" in sample:
        try:
            data = json.loads(sample["json"].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        if isinstance(data, dict):
            meta = {k: v for k, v in data.items() if k not in CAPTION_JSON_KEYS}
            caption = next((str(data[k]) for k in CAPTION_JSON_KEYS if data.get(k)), "")
    if "txt" in sample:
        caption = sample["txt"].decode("utf-8", errors="replace") or caption
    return caption.strip(), meta


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _worker_id_count() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def assign_shards(
    shards: Sequence[str], rank: int, world: int, worker: int, workers: int
) -> tuple[list, int, int]:
    """Split work over ranks, then over workers: whole shards when there are enough, else samples.

    Returns ``(my_shards, mod, rem)``: read ``my_shards`` and keep sample ``i`` of each shard when
    ``i % mod == rem``. Every sample goes to exactly one (rank, worker) and nobody idles for lack of shards.
    """
    mod, rem = 1, 0
    mine = list(shards)
    for part, parts in ((rank, world), (worker, workers)):
        if parts <= 1:
            continue
        if len(mine) >= parts:
            mine = mine[part::parts]
        else:  # too few shards: everyone reads them, and the samples are dealt round-robin
            rem, mod = rem + mod * part, mod * parts
    return mine, mod, rem


class WebDatasetVideos(IterableDataset):
    """Captioned clips streamed from WebDataset tar shards.

    Each sample is a video under ``mp4``/``webm``/``gif``/``avi`` (also ``mov``/``mkv``) plus a caption in
    ``txt`` or in ``json`` under ``"caption"`` (other json fields land in ``meta``). Shards are split per
    distributed rank (when ``torch.distributed`` is initialised) and per DataLoader worker; shard order is
    shuffled with ``seed + epoch`` (call ``set_epoch`` each epoch), and raw samples pass a shuffle buffer
    before decoding. Clip starts are random but reproducible: they depend on seed, epoch and sample key.
    """

    def __init__(
        self,
        urls_or_dir: str | os.PathLike[str] | Sequence[str],
        num_frames: int,
        size: int | Size | None = None,
        *,
        frame_stride: int | None = None,
        sample_fps: float | None = None,
        buckets: Sequence[Size] | None = None,
        random_start: bool = True,
        shuffle: bool = True,
        shuffle_buffer: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.shards = _expand_urls(urls_or_dir)
        self.sampling = make_sampling(num_frames, size, frame_stride, sample_fps, buckets, random_start)
        if not isinstance(shuffle_buffer, int) or shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer: expected a positive int, got {shuffle_buffer!r}")
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.epoch = 0
        self.skipped = SkipCounter(type(self).__name__)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently next epoch (takes effect in workers started after this call)."""
        self.epoch = epoch

    def _my_shards(self) -> tuple[list[str], int, int, str]:
        rank, world = _dist_rank_world()
        worker, workers = _worker_id_count()
        shards = list(self.shards)
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(shards)  # same order on every rank
        mine, mod, rem = assign_shards(shards, rank, world, worker, workers)
        return mine, mod, rem, f"rank {rank}/{world}, worker {worker}/{workers}"

    def _raw_samples(self, shards: list[str], mod: int, rem: int, local: Counter) -> Iterator[dict]:
        for url in shards:
            try:
                for i, sample in enumerate(iter_tar_samples(url)):
                    if i % mod == rem:
                        sample["__url__"] = url
                        yield sample
            except (OSError, tarfile.TarError, EOFError) as exc:
                self.skipped.add("bad_shard", url, f"{type(exc).__name__}: {exc}")
                local["bad_shard"] += 1

    def _shuffled(self, samples: Iterator[dict], where: str) -> Iterator[dict]:
        if not self.shuffle or self.shuffle_buffer <= 1:
            yield from samples
            return
        rng = random.Random(f"{self.seed}:{self.epoch}:{where}")
        buffer: list[dict] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def _to_item(self, sample: dict) -> dict:
        key, url = sample["__key__"], sample["__url__"]
        video_ext = next((ext for ext in VIDEO_KEYS if ext in sample), None)
        if video_ext is None:
            raise SkipSample(
                "missing_video", f"members {sorted(k for k in sample if not k.startswith('__'))}"
            )
        caption, meta = _caption_from_sample(sample)
        if not caption:
            raise SkipSample("missing_caption")
        rng = random.Random(f"{self.seed}:{self.epoch}:{url}:{key}")
        frames, info = decode_clip(sample[video_ext], self.sampling, rng)
        meta.update(info, key=key, shard=url)
        return {"video": to_video_tensor(frames), "caption": caption, "meta": meta}

    def __iter__(self) -> Iterator[dict]:
        shards, mod, rem, where = self._my_shards()
        local: Counter[str] = Counter()
        yielded = 0
        for sample in self._shuffled(self._raw_samples(shards, mod, rem, local), where):
            try:
                item = self._to_item(sample)
            except SkipSample as skip:
                self.skipped.add(skip.reason, f"{sample['__url__']}:{sample['__key__']}", skip.detail)
                local[skip.reason] += 1
                continue
            yielded += 1
            yield item
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(local.items())) or "none"
        name = type(self).__name__
        skipped = sum(local.values())
        logger.info(
            "%s (%s): %d shards, %d clips, skipped %d (%s)",
            name,
            where,
            len(shards),
            yielded,
            skipped,
            reasons,
        )
