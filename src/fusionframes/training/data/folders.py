"""A folder of videos with a captions file (CSV or JSON lines, WebVid-style columns) as a dataset."""

from __future__ import annotations

import csv
import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from fusionframes.training.data.decode import VIDEO_KEYS, Size, decode_clip, make_sampling, to_video_tensor
from fusionframes.training.data.skips import NoUsableClips, SkipCounter, SkipSample

logger = logging.getLogger(__name__)

VIDEO_COLUMNS = ("video", "path", "file", "filename", "videoid", "video_id")
CAPTION_COLUMNS = ("caption", "name", "text", "prompt")
CAPTION_FILE_EXTS = (".csv", ".jsonl")


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
        raise NoUsableClips(str(self.root), dict(self.skipped))

    def log_skip_summary(self, level: int = logging.INFO) -> None:
        self.skipped.log_summary(level)
