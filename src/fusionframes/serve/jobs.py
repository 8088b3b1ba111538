"""The job queue: a SQLite database (WAL mode) plus an ``outputs/`` folder inside the data dir.

Why SQLite: jobs and their settings must survive a crash or restart, queued jobs must keep their
order, and several worker threads claim jobs concurrently. One connection guarded by a lock is enough
for one server process; a lock file keeps a second server off the same data dir.

Job life: ``queued -> running -> done | failed | cancelled``. A job found ``running`` when the store
opens belonged to a server that died; :meth:`JobStore.recover` puts it back in the queue at its
original place (the queue is ordered by the insertion sequence, never by time).
"""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
SCHEMA_VERSION = 2

# The quota's estimate of a job's files before any job has finished, in bytes per frame pixel (the
# encoders at their settings here stay below: H.264 and WebP well under 1, GIF about 1.5 at 64 px,
# less when larger); then learnt from finished jobs (see JobStore.expected_bytes).
DEFAULT_BYTES_PER_PIXEL = {"mp4": 1.0, "gif": 2.0, "webp": 1.0}
ESTIMATE_MARGIN = 1.25
HEADER_BYTES = 4096
SIDE_FILE_BYTES = 8192  # outputs/<id>.json

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    settings TEXT NOT NULL,
    formats TEXT NOT NULL,
    model TEXT,
    num_frames INTEGER,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    stage TEXT,
    progress TEXT,
    error TEXT,
    result TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT,
    expected_bytes INTEGER NOT NULL DEFAULT 0,
    delete_requested INTEGER NOT NULL DEFAULT 0,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Version 1 -> 2: columns added in place (a data dir of an older server keeps its jobs).
MIGRATION_2 = {
    "request_hash": "TEXT",
    "expected_bytes": "INTEGER NOT NULL DEFAULT 0",
    "delete_requested": "INTEGER NOT NULL DEFAULT 0",
    "owner": "TEXT",
}


class QueueFull(RuntimeError):
    """More active jobs than the server allows (HTTP 429)."""


class QuotaExceeded(RuntimeError):
    """The outputs folder is over its disk quota (HTTP 507)."""


class JobConflict(RuntimeError):
    """The job is in a state that does not allow the operation (HTTP 409)."""


class DataDirBusy(RuntimeError):
    """Another server process holds the data dir."""


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
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        for name in ("params", "settings", "formats", "progress", "result"):
            data[name] = json.loads(data[name]) if data[name] is not None else None
        data["cancel_requested"] = bool(data["cancel_requested"])
        data["delete_requested"] = bool(data.get("delete_requested", 0))
        return cls(**data)


def new_job_id() -> str:
    """Random, unguessable, and safe to use as a file name (32 lowercase hex digits)."""
    return uuid.uuid4().hex


def valid_job_id(job_id: str) -> bool:
    return isinstance(job_id, str) and JOB_ID.fullmatch(job_id) is not None


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


class DataDirLock:
    """An exclusive ``flock`` on ``server.lock``: the kernel drops it when the process dies."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "server.lock"
        self._file: Any = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one server per data dir is up to the user
            return
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the server
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise DataDirBusy(
                f"data-dir: {self.path.parent} is in use by another fusionframes server; "
                "stop it or give another --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


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


class JobStore(StoreBase):
    """Jobs in ``<data_dir>/jobs.sqlite3``, their videos in ``<data_dir>/outputs/<id>.<format>``."""

    def __init__(self, data_dir: str | os.PathLike[str], lock: bool = True) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        from fusionframes.serve.artifacts import LocalArtifacts  # it imports this module

        self.artifacts = LocalArtifacts(self.data_dir / "outputs")
        self.outputs = self.artifacts.root
        self._dir_lock = DataDirLock(self.data_dir)
        if lock:
            self._dir_lock.acquire()
        self._lock = threading.RLock()
        self._live: dict[str, dict[str, Any]] = {}  # per-step progress of running jobs (not persisted)
        self._db = sqlite3.connect(
            self.data_dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a job accepted with 201 must survive a power cut
        self._db.executescript(SCHEMA)
        self._migrate()
        self.health = StorageHealth()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"data-dir: {self.data_dir} was written by a newer fusionframes (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); upgrade or give another --data-dir"
            )
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, kind in MIGRATION_2.items():
            if name not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._dir_lock.release()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a full disk becomes :class:`StorageError` and marks the store
        unhealthy (see :class:`StorageHealth`)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except (sqlite3.Error, OSError) as error:
                problem = storage_problem(error)
                if problem is None:
                    raise
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self.health.failed(problem)
                raise problem from error

    # -- startup -------------------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """After a crash: re-queue jobs that were running, finish pending cancels, drop temp files."""
        with self._transaction() as db:
            deleted = db.execute("SELECT id FROM jobs WHERE delete_requested=1").fetchall()
            db.execute("DELETE FROM jobs WHERE delete_requested=1")
            failed = db.execute(
                "UPDATE jobs SET status=?, finished=?, error=? WHERE status=? AND attempts>=?",
                (
                    FAILED,
                    time.time(),
                    "the server stopped during this job too many times",
                    RUNNING,
                    MAX_ATTEMPTS,
                ),
            ).rowcount
            requeued = db.execute(
                "UPDATE jobs SET status=?, started=NULL, stage=NULL, progress=NULL "
                "WHERE status=? AND cancel_requested=0",
                (QUEUED, RUNNING),
            ).rowcount
            cancelled = db.execute(
                "UPDATE jobs SET status=?, finished=? WHERE status IN (?, ?) AND cancel_requested=1",
                (CANCELLED, time.time(), QUEUED, RUNNING),
            ).rowcount
        for row in deleted:
            self.remove_files(row["id"])
        removed = self._remove_temp_files()
        return {
            "requeued": requeued,
            "cancelled": cancelled,
            "failed": failed,
            "deleted": len(deleted),
            "temp_files_removed": removed,
        }

    def set_meta(self, key: str, value: Any) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    # -- creating and reading ------------------------------------------------------------------------

    def create(
        self,
        mode: str,
        params: dict[str, Any],
        settings: dict[str, Any],
        formats: list[str],
        *,
        model: str | None = None,
        num_frames: int | None = None,
        max_active: int | None = None,
        quota_bytes: int | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        expected_bytes: int = 0,
        progress: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> tuple[Job, bool]:
        """Queue a job; returns ``(job, created)``. A repeated ``idempotency_key`` returns the first job
        when ``request_hash`` matches the first request's, and raises :class:`IdempotencyMismatch`
        when it does not.

        The queue-length and quota checks run in the same transaction as the insert, so concurrent
        requests cannot overshoot the limits. The quota counts the bytes on disk plus the expected
        size of every queued or running job (``expected_bytes``), so a long queue cannot overshoot it.
        """
        with self._transaction() as db:
            if idempotency_key is not None:
                row = db.execute("SELECT * FROM jobs WHERE idempotency_key=?", (idempotency_key,)).fetchone()
                if row is not None:
                    first = Job.from_row(row)
                    if first.request_hash is not None and first.request_hash != request_hash:
                        raise IdempotencyMismatch(
                            f"idempotency-key: {idempotency_key!r} was used for job {first.id} with a "
                            "different request body; use a new key for a new request"
                        )
                    return first, False
            if max_active is not None:
                active = db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", (QUEUED, RUNNING)
                ).fetchone()[0]
                if active >= max_active:
                    raise QueueFull(
                        f"queue is full: {active} jobs are queued or running (limit {max_active}); "
                        "try again when some have finished"
                    )
            if quota_bytes is not None:
                used = self.disk_usage()
                reserved = db.execute(
                    "SELECT COALESCE(SUM(expected_bytes), 0) FROM jobs WHERE status IN (?, ?)",
                    (QUEUED, RUNNING),
                ).fetchone()[0]
                if used + reserved + expected_bytes > quota_bytes:
                    raise QuotaExceeded(
                        f"disk quota exceeded: outputs use {used / 2**20:.3f} MiB and queued jobs are "
                        f"expected to add {reserved / 2**20:.3f} MiB; this job needs about "
                        f"{expected_bytes / 2**20:.3f} MiB of the {quota_bytes / 2**20:.3f} MiB quota; "
                        "delete old jobs (DELETE /api/jobs/{id}) or wait for queued ones"
                    )
            job_id = new_job_id()
            db.execute(
                "INSERT INTO jobs (id, mode, status, params, settings, formats, model, num_frames, created, "
                "idempotency_key, request_hash, expected_bytes, progress, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    mode,
                    QUEUED,
                    _dumps(params),
                    _dumps(settings),
                    _dumps(formats),
                    model,
                    num_frames,
                    time.time(),
                    idempotency_key,
                    request_hash,
                    int(expected_bytes),
                    _dumps(progress),
                    owner,
                ),
            )
            return Job.from_row(db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()), True

    def get(self, job_id: str) -> Job | None:
        if not valid_job_id(job_id):
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE id=? AND delete_requested=0", (job_id,)
            ).fetchone()
            job = Job.from_row(row) if row else None
            if job is not None and job.status == RUNNING and job.id in self._live:
                job.progress = self._live[job.id]
                job.stage = job.progress.get("stage")
        return job

    def list_jobs(
        self, limit: int = 50, offset: int = 0, status: str | None = None, owner: str | None = None
    ) -> tuple[list[Job], int]:
        """Newest first (the gallery order); ``status`` and ``owner`` filter."""
        clauses, params = ["delete_requested=0"], []
        for column, value in (("status", status), ("owner", owner)):
            if value is not None:
                clauses.append(f"{column}=?")
                params.append(value)
        where, args = "WHERE " + " AND ".join(clauses), tuple(params)
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT seq, id FROM jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?", (*args, limit, offset)
            ).fetchall()
            jobs = [self.get(row["id"]) for row in rows]
        return [job for job in jobs if job is not None], total

    def queue_position(self, job: Job) -> int | None:
        """1 for the next job to run, 2 for the one after, ...; None unless queued."""
        if job.status != QUEUED:
            return None
        with self._lock:
            ahead = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status=? AND seq<?", (QUEUED, job.seq)
            ).fetchone()[0]
        return ahead + 1

    def counts(self, owner: str | None = None) -> dict[str, int]:
        where, args = ("AND owner=?", (owner,)) if owner is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT status, COUNT(*) AS n FROM jobs WHERE delete_requested=0 {where} GROUP BY status",
                args,
            ).fetchall()
        counts = {status: 0 for status in (QUEUED, RUNNING, DONE, FAILED, CANCELLED)}
        counts.update({row["status"]: row["n"] for row in rows})
        return counts

    def mean_duration(self, last: int = 20) -> float | None:
        """Average run time of the last finished jobs, for queue ETAs."""
        with self._lock:
            row = self._db.execute(
                "SELECT AVG(finished - started) FROM (SELECT finished, started FROM jobs "
                "WHERE status=? AND started IS NOT NULL ORDER BY seq DESC LIMIT ?)",
                (DONE, last),
            ).fetchone()
        return row[0]

    # -- the worker side -----------------------------------------------------------------------------

    def claim(self) -> Job | None:
        """Take the oldest queued job (lowest sequence number) and mark it running."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM jobs WHERE status=? ORDER BY seq LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status=?, started=?, attempts=attempts+1, stage=NULL, progress=NULL "
                "WHERE id=?",
                (RUNNING, time.time(), row["id"]),
            )
            return Job.from_row(db.execute("SELECT * FROM jobs WHERE id=?", (row["id"],)).fetchone())

    def set_progress(self, job_id: str, progress: dict[str, Any], persist: bool) -> None:
        """Live progress for status requests; written to the database only when ``persist`` (stage
        changes), so per-step updates cost no disk writes."""
        with self._lock:
            self._live[job_id] = progress
        if persist:
            with self._transaction() as db:
                db.execute(
                    "UPDATE jobs SET stage=?, progress=? WHERE id=? AND status=?",
                    (progress.get("stage"), _dumps(progress), job_id, RUNNING),
                )

    def _end(self, job_id: str, status: str, **columns: Any) -> bool:
        """Leave ``running``; the last live progress is kept, so a cancelled job shows where it stopped."""
        with self._transaction() as db:
            progress = columns.get("progress") or self._live.get(job_id)
            if progress is not None:
                columns.update(progress=progress, stage=progress.get("stage"))
            sets = ", ".join(f"{name}=?" for name in ("status", "finished", *columns))
            values = [
                status,
                time.time(),
                *(_dumps(v) if isinstance(v, dict) else v for v in columns.values()),
            ]
            # A job deleted while it ran (DELETE answered 202) goes now, instead of ending.
            db.execute("DELETE FROM jobs WHERE id=? AND status=? AND delete_requested=1", (job_id, RUNNING))
            updated = db.execute(
                f"UPDATE jobs SET {sets} WHERE id=? AND status=?", (*values, job_id, RUNNING)
            ).rowcount
            self._live.pop(job_id, None)
        return updated == 1

    def finish(self, job_id: str, result: dict[str, Any], progress: dict[str, Any]) -> bool:
        """Mark done (only after the output files are in place); False if the job was deleted."""
        return self._end(job_id, DONE, result=result, progress=progress)

    def fail(self, job_id: str, error: str) -> bool:
        return self._end(job_id, FAILED, error=error)

    def mark_cancelled(self, job_id: str) -> bool:
        return self._end(job_id, CANCELLED, error=None)

    def requeue(self, job_id: str) -> None:
        """Back to the queue at its original place (the server is shutting down mid-job)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET status=?, started=NULL, stage=NULL, progress=NULL, attempts=attempts-1 "
                "WHERE id=? AND status=?",
                (QUEUED, job_id, RUNNING),
            )
            self._live.pop(job_id, None)

    def exists(self, job_id: str) -> bool:
        """The job has a row (a job hidden by a pending delete included)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM jobs WHERE id=?", (job_id,)).fetchone() is not None

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row[0])

    # -- cancelling and deleting ---------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is flagged (the worker stops it)."""
        with self._transaction() as db:
            row = db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            if row["status"] in FINAL:
                raise JobConflict(f"job {job_id} is already {row['status']}; nothing to cancel")
            if row["status"] == QUEUED:
                db.execute(
                    "UPDATE jobs SET status=?, finished=?, cancel_requested=1 WHERE id=?",
                    (CANCELLED, time.time(), job_id),
                )
            else:
                db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
        job = self.get(job_id)
        assert job is not None
        return job

    def delete(self, job_id: str) -> bool:
        """Remove a job and every file it owns. True when it is gone now; False for a running job,
        which is flagged for cancellation and deletion: it is hidden at once (404) and its row and
        files go when its worker stops it (within a step), so no caller ever waits on a worker."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT status FROM jobs WHERE id=? AND delete_requested=0", (job_id,)
            ).fetchone()
            if row is None:
                raise KeyError(job_id)
            if row["status"] == RUNNING:
                db.execute("UPDATE jobs SET cancel_requested=1, delete_requested=1 WHERE id=?", (job_id,))
                return False
            db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        self.remove_files(job_id)
        return True

    def _bytes_per_pixel(self, last: int = 20) -> dict[str, float]:
        with self._lock:
            rows = self._db.execute(
                "SELECT result FROM jobs WHERE status=? AND result IS NOT NULL ORDER BY seq DESC LIMIT ?",
                (DONE, last),
            ).fetchall()
        return bytes_per_pixel(json.loads(row["result"]) for row in rows)


def bytes_per_pixel(results: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Per format, the largest file size per frame pixel among these job results."""
    rates: dict[str, float] = {}
    for result in results:
        pixels = result.get("num_frames", 0) * result.get("width", 0) * result.get("height", 0)
        for fmt, size in (result.get("files") or {}).items():
            if pixels > 0:
                rates[fmt] = max(rates.get(fmt, 0.0), size / pixels)
    return rates
