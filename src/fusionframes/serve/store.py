"""What every job store shares: the job life, the job record, errors, write health, and the store
interface (:class:`StoreBase`) that the SQLite store (:mod:`fusionframes.serve.jobs`, one process) and
the PostgreSQL store (:mod:`fusionframes.serve.pgstore`, many hosts) implement.

Job life: ``queued -> running -> done | failed | cancelled``. The queue is ordered by the insertion
sequence (``seq``), never by time, so a job put back after a crash or a lost lease keeps its place.
"""

from __future__ import annotations

import errno
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fusionframes.serve.artifacts import Artifacts

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
FINAL = (DONE, FAILED, CANCELLED)
FORMATS = ("mp4", "gif", "webp")
JOB_ID = re.compile(r"[0-9a-f]{32}")
JOB_ID_PATTERN = "^[0-9a-f]{32}$"
MAX_OFFSET = 2**31 - 1  # list offsets beyond this are refused by the schema (SQLite takes 64-bit ints)
MAX_ATTEMPTS = 3  # a job that killed the server this many times is failed, not retried forever

# The quota's estimate of a job's files before any job has finished, in bytes per frame pixel (the
# encoders at their settings here stay below: H.264 and WebP well under 1, GIF about 1.5 at 64 px,
# less when larger); then learnt from finished jobs (see JobStore.expected_bytes).
DEFAULT_BYTES_PER_PIXEL = {"mp4": 1.0, "gif": 2.0, "webp": 1.0}
ESTIMATE_MARGIN = 1.25
HEADER_BYTES = 4096
SIDE_FILE_BYTES = 8192  # outputs/<id>.json


class QueueFull(RuntimeError):
    """More active jobs than the server allows (HTTP 429)."""


class QuotaExceeded(RuntimeError):
    """The outputs folder is over its disk quota (HTTP 507)."""


class JobConflict(RuntimeError):
    """The job is in a state that does not allow the operation (HTTP 409)."""


class IdempotencyMismatch(ValueError):
    """An ``Idempotency-Key`` reused with a different request body (HTTP 422)."""


class StorageError(RuntimeError):
    """The data dir cannot be written (a full disk: HTTP 507; anything else: 503)."""

    def __init__(self, message: str, full: bool) -> None:
        super().__init__(message)
        self.full = full


def storage_problem(error: BaseException) -> StorageError | None:
    """A write failure of the data dir, as a :class:`StorageError`; None for any other error.

    SQLite says "database or disk is full" (``SQLITE_FULL``) and the file system ``ENOSPC`` or
    ``EDQUOT``; encoders wrap the latter, so the cause chain is searched too.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageError):
            return current
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageError(f"the server's disk is full ({current.strerror or current})", full=True)
        if isinstance(current, sqlite3.OperationalError | sqlite3.DatabaseError):
            text = str(current)
            full = "full" in text or getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            if full or "disk i/o" in text or "readonly" in text:
                kind = "the server's disk is full" if full else "the job database cannot be written"
                return StorageError(f"{kind} ({text})", full=full)
        current = current.__cause__ or current.__context__
    return None


class StorageHealth:
    """Whether the data dir takes writes. Any failed write marks it broken; only a successful
    :meth:`JobStore.probe` (a real file write and a database write) marks it healthy again, so the
    server refuses new jobs while the disk is full and recovers by itself once space returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.problem: StorageError | None = None
        self.last_probe = 0.0

    def failed(self, error: StorageError) -> None:
        with self._lock:
            self.problem = error

    def ok(self) -> None:
        with self._lock:
            self.problem = None


@dataclass
class Job:
    """One row of the ``jobs`` table, JSON columns decoded."""

    seq: int
    id: str
    mode: str
    status: str
    params: dict[str, Any]
    settings: dict[str, Any]
    formats: list[str]
    model: str | None
    num_frames: int | None
    created: float
    started: float | None
    finished: float | None
    stage: str | None
    progress: dict[str, Any] | None
    error: str | None
    result: dict[str, Any] | None
    cancel_requested: bool
    attempts: int
    idempotency_key: str | None = field(default=None, repr=False)
    request_hash: str | None = field(default=None, repr=False)
    expected_bytes: int = 0
    delete_requested: bool = False
    owner: str | None = None  # the user token's name that made it (None: admin or no tokens)

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """A row of either store (columns only a store uses, such as a lease, are left out)."""
        data = {key: value for key, value in dict(row).items() if key in JOB_FIELDS}
        for name in ("params", "settings", "formats", "progress", "result"):
            data[name] = json.loads(data[name]) if data[name] is not None else None
        data["cancel_requested"] = bool(data["cancel_requested"])
        data["delete_requested"] = bool(data.get("delete_requested", 0))
        return cls(**data)


JOB_FIELDS = frozenset(f.name for f in fields(Job))


def new_job_id() -> str:
    """Random, unguessable, and safe to use as a file name (32 lowercase hex digits)."""
    return uuid.uuid4().hex


def valid_job_id(job_id: str) -> bool:
    return isinstance(job_id, str) and JOB_ID.fullmatch(job_id) is not None


def dumps(value: Any) -> str | None:
    """A JSON column's text (None stays NULL); keys sorted so equal values store equal text."""
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


class StoreBase:
    """What every job store shares: the results (``artifacts``: a folder or a bucket, see
    :mod:`fusionframes.serve.artifacts`), write probes and the quota's estimates.

    A store's job life is ``queued -> running -> done | failed | cancelled``. Stores that serve
    several processes (:mod:`fusionframes.serve.pgstore`) set ``leases``: a claimed job carries a
    lease its worker renews (:meth:`heartbeat`); ``progress_interval`` and ``cancel_poll`` tell a
    worker how often to write progress for other processes and to look for cancellations made
    through another process (None: not needed, everything happens in this process).
    """

    artifacts: Artifacts
    health: StorageHealth
    leases = False
    progress_interval: float | None = None
    cancel_poll: float | None = None

    def heartbeat(self, job_ids: list[str]) -> set[str]:
        """Renew the leases of these running jobs; returns those this process still owns."""
        return set(job_ids)

    def exists(self, job_id: str) -> bool:
        raise NotImplementedError

    def input_image(self, job_id: str) -> bytes | None:
        """The image a job was given (image-to-video), or None."""
        raise NotImplementedError

    def cancel_requested(self, job_id: str) -> bool:
        raise NotImplementedError

    def set_meta(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def _bytes_per_pixel(self, last: int = 20) -> dict[str, float]:
        raise NotImplementedError

    def probe(self) -> bool:
        """Try a real write (64 KiB where results are written, and a database row); True if both
        work. Marks the store healthy again on success."""
        self.health.last_probe = time.monotonic()
        try:
            self.artifacts.probe()
            self.set_meta("probe", time.time())
        except (OSError, StorageError) as error:
            problem = storage_problem(error)
            if problem is None:
                raise
            self.health.failed(problem)
            return False
        self.health.ok()
        return True

    def writable(self, retry_after: float = 1.0) -> StorageError | None:
        """The current write problem, re-probing at most every ``retry_after`` seconds."""
        if self.health.problem is not None and time.monotonic() - self.health.last_probe >= retry_after:
            self.probe()
        return self.health.problem

    def _remove_temp_files(self) -> int:
        return self.artifacts.clean_temporaries()

    def output_path(self, job_id: str, fmt: str) -> Path:
        """Where a worker renders ``fmt`` of a job (see :meth:`Artifacts.target`)."""
        return self.artifacts.target(job_id, fmt)

    def remove_files(self, job_id: str) -> None:
        self.artifacts.remove(job_id)

    def expected_bytes(self, num_frames: int, width: int, height: int, formats: list[str]) -> int:
        """What a job's files will take: per format, the largest bytes per frame pixel of the last
        20 finished jobs (or :data:`DEFAULT_BYTES_PER_PIXEL` before there are any) times
        :data:`ESTIMATE_MARGIN`, plus the settings file and container headers."""
        pixels = max(1, num_frames) * max(1, width) * max(1, height)
        observed = self._bytes_per_pixel()
        total = SIDE_FILE_BYTES
        for fmt in formats:
            rate = observed.get(fmt, DEFAULT_BYTES_PER_PIXEL[fmt])
            total += round(rate * ESTIMATE_MARGIN * pixels) + HEADER_BYTES
        return total

    def disk_usage(self) -> int:
        """Bytes of results (temporaries included: they take space too)."""
        return self.artifacts.usage()


def bytes_per_pixel(results: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Per format, the largest file size per frame pixel among these job results."""
    rates: dict[str, float] = {}
    for result in results:
        pixels = result.get("num_frames", 0) * result.get("width", 0) * result.get("height", 0)
        for fmt, size in (result.get("files") or {}).items():
            if pixels > 0:
                rates[fmt] = max(rates.get(fmt, 0.0), size / pixels)
    return rates
