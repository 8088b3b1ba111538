"""Clip sampling and decoding: which frames of a video are read, at what size, as a [-1, 1] tensor."""

from __future__ import annotations

import io
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusionframes.training.data.skips import SkipSample

logger = logging.getLogger(__name__)

VIDEO_KEYS: tuple[str, ...] = ("mp4", "webm", "gif", "avi", "mov", "mkv")
"""WebDataset extensions (and folder file extensions) holding a video, in order of preference."""

Size = tuple[int, int]


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
