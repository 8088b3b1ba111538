"""Skipped samples: the reasons, and a counter shared with DataLoader worker processes."""

from __future__ import annotations

import logging
import multiprocessing
from collections import Counter
from collections.abc import Iterator, Mapping

logger = logging.getLogger(__name__)

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
# Counters made in the spawn context can be handed to fork, spawn and forkserver workers alike (a fork-context
# lock refuses to be pickled for spawned workers).
_SHARED_CTX = multiprocessing.get_context("spawn")
WARN_FIRST = 5  # per reason and process, then individual skips are logged at DEBUG only


class SkipSample(Exception):
    """Raised inside the loaders for a sample that must be skipped; carries the reason key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class NoUsableClips(ValueError):
    """Every sample of a dataset was skipped; ``counts`` says why (reason -> number)."""

    def __init__(self, where: str, counts: dict[str, int]) -> None:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())) or "none read"
        super().__init__(f"data: no usable clips in {where} (skipped: {reasons})")
        self.counts = dict(counts)


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
