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

import csv
import io
import json
import logging
import math
import multiprocessing
import os
import random
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

logger = logging.getLogger(__name__)

VIDEO_KEYS: tuple[str, ...] = ("mp4", "webm", "gif", "avi", "mov", "mkv")
"""WebDataset extensions (and folder file extensions) holding a video, in order of preference."""

SKIP_REASONS: tuple[str, ...] = (
    "missing_file",  # the captions file names a video that is not there
    "unreadable",  # the file exists but cannot be opened/read (permissions, I/O error)
    "empty",  # zero-length video
    "corrupt",  # not decodable as a video
    "missing_caption",  # no caption, or an empty one
    "missing_video",  # a WebDataset sample without any video member
    "too_short",  # fewer frames than num_frames at the asked stride/fps
    "bad_shard",  # a tar shard that cannot be opened or is truncated (rest of shard lost)
)
CAPTION_JSON_KEYS = ("caption", "text")
VIDEO_COLUMNS = ("video", "path", "file", "filename", "videoid", "video_id")
CAPTION_COLUMNS = ("caption", "name", "text", "prompt")
CAPTION_FILE_EXTS = (".csv", ".jsonl")
# Counters made in the spawn context can be handed to fork, spawn and forkserver workers alike (a fork-context
# lock refuses to be pickled for spawned workers).
_SHARED_CTX = multiprocessing.get_context("spawn")
WARN_FIRST = 5  # per reason and process, then individual skips are logged at DEBUG only

Size = tuple[int, int]


class SkipSample(Exception):
    """Raised inside the loaders for a sample that must be skipped; carries the reason key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# -------------------------------------------------------------------------------------- skip counter


class SkipCounter(Mapping):
    """Per-reason counts of skipped samples, shared between the parent and DataLoader worker processes.

    Reads like a read-only dict of the non-zero counts (``dict(counter)``, ``counter["corrupt"]``, falsy
    when nothing was skipped); ``add`` records a skip.
    """

    def __init__(self, name: str = "dataset") -> None:
        self.name = name
        self._counts = _SHARED_CTX.Array("q", len(SKIP_REASONS), lock=True)
        self._warned: Counter[str] = Counter()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_warned"] = Counter()
        # Shared memory travels only to worker processes being started; any other copy (pickle, deepcopy)
        # carries the current counts and then counts on its own.
        from multiprocessing.context import get_spawning_popen

        if get_spawning_popen() is None:
            state["_counts"] = list(self._counts[:])
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["_counts"], list):
            state["_counts"] = _SHARED_CTX.Array("q", state["_counts"], lock=True)
        self.__dict__.update(state)

    def add(self, reason: str, item: str = "", detail: str = "") -> None:
        """Count one skip and log it (the first few per reason as warnings, the rest at debug level)."""
        if reason not in SKIP_REASONS:
            raise ValueError(f"reason: unknown skip reason {reason!r}; allowed: {', '.join(SKIP_REASONS)}")
        with self._counts.get_lock():
            self._counts[SKIP_REASONS.index(reason)] += 1
        self._warned[reason] += 1
        level = logging.WARNING if self._warned[reason] <= WARN_FIRST else logging.DEBUG
        logger.log(
            level, "%s: skipping %s (%s%s)", self.name, item or "sample", reason, f": {detail}" * bool(detail)
        )

    def counts(self) -> dict[str, int]:
        """Non-zero counts by reason."""
        with self._counts.get_lock():
            values = list(self._counts[:])
        return {r: int(v) for r, v in zip(SKIP_REASONS, values, strict=True) if v}

    def __getitem__(self, reason: str) -> int:
        return self.counts().get(reason, 0) if reason in SKIP_REASONS else self.counts()[reason]

    def __iter__(self) -> Iterator[str]:
        return iter(self.counts())

    def __len__(self) -> int:
        return len(self.counts())

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def reset(self) -> None:
        with self._counts.get_lock():
            for i in range(len(SKIP_REASONS)):
                self._counts[i] = 0

    def summary(self) -> str:
        counts = self.counts()
        if not counts:
            return f"{self.name}: skipped no samples"
        parts = ", ".join(f"{reason}={n}" for reason, n in counts.items())
        return f"{self.name}: skipped {sum(counts.values())} samples ({parts})"

    def log_summary(self, level: int = logging.INFO) -> None:
        logger.log(level, "%s", self.summary())

    def __repr__(self) -> str:
        return f"SkipCounter({self.summary()!r})"


# ------------------------------------------------------------------------------------- clip sampling


@dataclass(frozen=True)
class ClipSampling:
    """How a clip is cut from a video: frame count, temporal step, spatial size or aspect buckets."""

    num_frames: int
    size: Size | None = None
    frame_stride: int | None = None
    sample_fps: float | None = None
    buckets: tuple[Size, ...] | None = None
    random_start: bool = True

    def step(self, source_fps: float | None) -> float:
        """Source frames between taken frames; never below 1 (a slow clip is not up-sampled)."""
        if self.frame_stride is not None:
            return float(self.frame_stride)
        if self.sample_fps is not None and source_fps:
            return max(1.0, source_fps / self.sample_fps)
        return 1.0

    def target_size(self, height: int, width: int) -> Size:
        """The fixed size, or the bucket whose aspect ratio is closest (in log space) to the clip's."""
        if not self.buckets:
            assert self.size is not None
            return self.size
        aspect = math.log(width / height)
        return min(self.buckets, key=lambda b: abs(math.log(b[1] / b[0]) - aspect))


def _parse_size(name: str, value: Any) -> Size:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(
        f"{name}: expected a positive int or a (height, width) pair of positive ints, got {value!r}"
    )


def make_sampling(
    num_frames: int,
    size: int | Size | None,
    frame_stride: int | None = None,
    sample_fps: float | None = None,
    buckets: Sequence[Size] | None = None,
    random_start: bool = True,
) -> ClipSampling:
    """Validate the clip settings shared by both datasets (one clear error per bad parameter)."""
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise ValueError(f"num_frames: expected a positive int, got {num_frames!r}")
    if frame_stride is not None and sample_fps is not None:
        raise ValueError("frame_stride/sample_fps: give one of them, not both")
    if frame_stride is not None and (not isinstance(frame_stride, int) or frame_stride < 1):
        raise ValueError(f"frame_stride: expected a positive int, got {frame_stride!r}")
    if sample_fps is not None and not (isinstance(sample_fps, (int, float)) and sample_fps > 0):
        raise ValueError(f"sample_fps: expected a positive number, got {sample_fps!r}")
    parsed_buckets = None
    if buckets is not None:
        if not buckets:
            raise ValueError("buckets: expected a non-empty list of (height, width) pairs, got an empty list")
        parsed_buckets = tuple(_parse_size("buckets", b) for b in buckets)
    if size is None and parsed_buckets is None:
        raise ValueError("size: expected a positive int or (height, width); or give buckets")
    parsed_size = _parse_size("size", size) if size is not None else None
    return ClipSampling(num_frames, parsed_size, frame_stride, sample_fps, parsed_buckets, random_start)


def _frame_indices(total: int, step: float, sampling: ClipSampling, rng: random.Random) -> list[int] | None:
    """Source-frame indices of one clip, or None when the video is too short for it."""
    span = math.floor((sampling.num_frames - 1) * step) + 1
    if total < span:
        return None
    start = rng.randint(0, total - span) if sampling.random_start else 0
    return [start + round(k * step) for k in range(sampling.num_frames)]


def _resize_shape(height: int, width: int, target: Size) -> Size:
    """Scale so the shorter side (relative to the target) fits exactly; the rest is centre-cropped."""
    th, tw = target
    scale = max(th / height, tw / width)
    return max(th, round(height * scale)), max(tw, round(width * scale))


def _centre_crop(arr: np.ndarray, target: Size) -> np.ndarray:
    th, tw = target
    top, left = (arr.shape[0] - th) // 2, (arr.shape[1] - tw) // 2
    return arr[top : top + th, left : left + tw]


def _open_container(source: bytes | Path):
    import av

    if isinstance(source, bytes):
        return av.open(io.BytesIO(source))
    return av.open(str(source))


def _count_frames(source: bytes | Path, stream_frames: int) -> int:
    """Frame count from the header, else by demuxing packets (cheap: nothing is decoded)."""
    if stream_frames > 0:
        return stream_frames
    with _open_container(source) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _check_readable(source: bytes | Path) -> None:
    if isinstance(source, bytes):
        if not source:
            raise SkipSample("empty", "zero-length video")
        return
    try:
        with open(source, "rb") as f:
            first = f.read(1)
    except FileNotFoundError:
        raise SkipSample("missing_file", str(source)) from None
    except OSError as exc:
        raise SkipSample("unreadable", str(exc)) from None
    if not first:
        raise SkipSample("empty", "zero-length video")


def decode_clip(
    source: bytes | str | os.PathLike[str], sampling: ClipSampling, rng: random.Random | None = None
) -> tuple[np.ndarray, dict]:
    """Decode one clip as uint8 [F, H, W, 3] (resized and centre-cropped) plus facts about it.

    Only the needed frames are converted and decoding stops after the last one. Raises ``SkipSample``
    for empty, unreadable, corrupt or too-short videos.
    """
    source = source if isinstance(source, bytes) else Path(source)
    _check_readable(source)
    try:
        return _decode(source, sampling, rng or random.Random(0))
    except SkipSample:
        raise
    except Exception as exc:  # PyAV raises many error types for damaged input; all mean "corrupt"
        raise SkipSample("corrupt", f"{type(exc).__name__}: {exc}") from None


def _decode(source: bytes | Path, sampling: ClipSampling, rng: random.Random) -> tuple[np.ndarray, dict]:
    with _open_container(source) as container:
        if not container.streams.video:
            raise SkipSample("corrupt", "no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        source_fps = float(rate) if rate else None
        total = _count_frames(source, stream.frames)
        step = sampling.step(source_fps)
        indices = _frame_indices(total, step, sampling, rng)
        if indices is None:
            raise SkipSample("too_short", f"{total} frames, need {sampling.num_frames} at step {step:g}")
        frames = _take_frames(container.decode(stream), indices, sampling)
    if len(frames) < len(indices):
        raise SkipSample("too_short", f"decoded only {len(frames)} of {len(indices)} wanted frames")
    info = {
        "source_fps": source_fps,
        "fps": source_fps / step if source_fps else None,
        "frame_indices": indices,
        "source_frames": total,
        "source_size": frames[0][1],
    }
    return np.stack([f for f, _ in frames]), info


def _take_frames(
    decoded: Iterable, indices: list[int], sampling: ClipSampling
) -> list[tuple[np.ndarray, Size]]:
    wanted = Counter(indices)
    last = indices[-1]
    out: list[tuple[np.ndarray, Size]] = []
    for i, frame in enumerate(decoded):
        if i in wanted:
            target = sampling.target_size(frame.height, frame.width)
            sh, sw = _resize_shape(frame.height, frame.width, target)
            arr = frame.to_ndarray(format="rgb24", width=sw, height=sh, interpolation="AREA")
            cropped = np.ascontiguousarray(_centre_crop(arr, target))
            out.extend([(cropped, (frame.height, frame.width))] * wanted[i])
        if i >= last:
            break
    return out


def to_video_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float32 [F, 3, H, W] in [-1, 1], the training contract."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


# ------------------------------------------------------------------------------------------ batching


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


# ------------------------------------------------------------------------------------- shard reading


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


# ------------------------------------------------------------------------------------- folder + captions


@dataclass(frozen=True)
class _Entry:
    path: Path
    caption: str
    meta: dict


def _find_captions_file(root: Path) -> Path:
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in CAPTION_FILE_EXTS and p.is_file())
    if not found:
        raise ValueError(f"captions_file: no .csv or .jsonl captions file in '{root}'; pass captions_file=")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(f"captions_file: several captions files in '{root}' ({names}); pass captions_file=")
    return found[0]


def _read_rows(captions_file: Path) -> list[dict]:
    """Rows of a CSV (header required) or JSONL file, with lower-cased keys."""
    if captions_file.suffix.lower() == ".csv":
        with open(captions_file, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    elif captions_file.suffix.lower() == ".jsonl":
        rows = []
        with open(captions_file, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise ValueError(
                        f"captions_file: line {n} of '{captions_file}' is not valid JSON"
                    ) from None
                if isinstance(row, dict):
                    rows.append(row)
    else:
        raise ValueError(f"captions_file: '{captions_file.name}' must end in .csv or .jsonl")
    return [{str(k).strip().lower(): v for k, v in row.items() if k is not None} for row in rows]


def _pick_column(rows: list[dict], options: Sequence[str], what: str, captions_file: Path) -> str:
    present = set().union(*(row.keys() for row in rows)) if rows else set()
    for name in options:
        if name in present:
            return name
    raise ValueError(
        f"captions_file: '{captions_file.name}' has no {what} column; allowed: {', '.join(options)}; "
        f"found: {', '.join(sorted(present)) or 'nothing'}"
    )


class _VideoLocator:
    """Finds a row's video: exact relative path, name plus a video extension, or (WebVid) ``page_dir``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_stem: dict[str, Path] | None = None

    def _index(self) -> dict[str, Path]:
        if self._by_stem is None:  # built only if some row is not found directly
            self._by_stem = {}
            for p in sorted(self.root.rglob("*")):
                if p.suffix.lower().lstrip(".") in VIDEO_KEYS:
                    self._by_stem.setdefault(p.stem, p)
        return self._by_stem

    def find(self, value: str, row: dict) -> Path | None:
        value = value.strip()
        folders = [self.root] + ([self.root / str(row["page_dir"])] if row.get("page_dir") else [])
        for folder in folders:
            candidate = folder / value
            if candidate.is_file():
                return candidate
            if not Path(value).suffix:
                for ext in VIDEO_KEYS:
                    if (folder / f"{value}.{ext}").is_file():
                        return folder / f"{value}.{ext}"
        return self._index().get(Path(value).stem if Path(value).suffix else value)


class FolderVideos(Dataset):
    """Map-style dataset: a folder of videos plus a CSV or JSONL of captions (WebVid-style tolerated).

    The video column may be ``video``/``path``/``file``/``filename`` (a path relative to ``root``) or
    ``videoid`` (a name without extension, searched under ``root`` and WebVid's ``page_dir``); the caption
    column ``caption``/``name``/``text``/``prompt``. Rows with a missing caption, a missing or zero-length
    file are dropped at construction (counted in ``skipped``). A video that fails at load time (corrupt,
    too short) is counted, remembered, and the next index is served instead, so an epoch never stops.
    Call ``log_skip_summary()`` at the end of an epoch for the totals over all workers.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        captions_file: str | os.PathLike[str] | None = None,
        num_frames: int = 16,
        size: int | Size | None = None,
        *,
        frame_stride: int | None = None,
        sample_fps: float | None = None,
        buckets: Sequence[Size] | None = None,
        random_start: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"root: video folder '{self.root}' does not exist")
        self.sampling = make_sampling(num_frames, size, frame_stride, sample_fps, buckets, random_start)
        self.captions_file = self._resolve_captions(captions_file)
        self.seed = seed
        self.epoch = 0
        self.skipped = SkipCounter(type(self).__name__)
        self._bad: set[int] = set()
        self.entries = self._load_entries()

    def _resolve_captions(self, captions_file: str | os.PathLike[str] | None) -> Path:
        if captions_file is None:
            return _find_captions_file(self.root)
        path = Path(captions_file).expanduser()
        if not path.is_absolute() and not path.exists():
            path = self.root / path
        if not path.is_file():
            raise FileNotFoundError(f"captions_file: '{captions_file}' does not exist")
        return path

    def _load_entries(self) -> list[_Entry]:
        rows = _read_rows(self.captions_file)
        if not rows:
            raise ValueError(f"captions_file: '{self.captions_file}' holds no rows")
        video_col = _pick_column(rows, VIDEO_COLUMNS, "video", self.captions_file)
        caption_col = _pick_column(rows, CAPTION_COLUMNS, "caption", self.captions_file)
        locator = _VideoLocator(self.root)
        entries = []
        for n, row in enumerate(rows, 1):
            entry = self._entry(row, n, video_col, caption_col, locator)
            if entry is not None:
                entries.append(entry)
        if not entries:
            raise ValueError(
                f"captions_file: none of the {len(rows)} rows of '{self.captions_file.name}' gives a usable "
                f"captioned video under '{self.root}' ({self.skipped.summary()})"
            )
        if self.skipped.total:
            self.skipped.log_summary(logging.WARNING)
        return entries

    def _entry(
        self, row: dict, n: int, video_col: str, caption_col: str, locator: _VideoLocator
    ) -> _Entry | None:
        name = str(row.get(video_col) or "").strip()
        caption = str(row.get(caption_col) or "").strip()
        where = f"row {n} ({name or 'no video name'})"
        if not caption:
            self.skipped.add("missing_caption", where)
            return None
        path = locator.find(name, row) if name else None
        if path is None:
            self.skipped.add("missing_file", where)
            return None
        try:
            if path.stat().st_size == 0:
                self.skipped.add("empty", where)
                return None
        except OSError as exc:
            self.skipped.add("unreadable", where, str(exc))
            return None
        meta = {k: v for k, v in row.items() if k not in (video_col, caption_col)}
        return _Entry(path, caption, meta)

    def set_epoch(self, epoch: int) -> None:
        """Pick different clip starts next epoch (takes effect in workers started after this call)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def _load(self, index: int) -> dict:
        entry = self.entries[index]
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
        frames, info = decode_clip(entry.path, self.sampling, rng)
        meta = {**entry.meta, **info, "path": str(entry.path), "index": index}
        return {"video": to_video_tensor(frames), "caption": entry.caption, "meta": meta}

    def __getitem__(self, index: int) -> dict:
        n = len(self.entries)
        if not -n <= index < n:
            raise IndexError(f"index: {index} out of range for {n} videos")
        index %= n
        for offset in range(n):
            i = (index + offset) % n
            if i in self._bad:
                continue
            try:
                return self._load(i)
            except SkipSample as skip:
                self._bad.add(i)
                self.skipped.add(skip.reason, str(self.entries[i].path), skip.detail)
        raise RuntimeError(f"{type(self).__name__}: no loadable video left ({self.skipped.summary()})")

    def log_skip_summary(self, level: int = logging.INFO) -> None:
        self.skipped.log_summary(level)


# ---------------------------------------------------------------------------------------------- factory


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
