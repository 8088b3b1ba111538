"""The SQLite job store: a database (WAL mode) plus an ``outputs/`` folder inside the data dir.

Why SQLite: jobs and their settings must survive a crash or restart, queued jobs must keep their
order, and several worker threads claim jobs concurrently. One connection guarded by a lock is enough
for one server process; a lock file keeps a second server off the same data dir. The queries it shares
with the PostgreSQL store are in :mod:`fusionframes.serve.sqlstore`.

A job found ``running`` when the store opens belonged to a server that died; :meth:`JobStore.recover`
puts it back in the queue at its original place (the queue is ordered by the insertion sequence).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fusionframes.serve.sqlstore import CANCELLED, FAILED, QUEUED, RUNNING, SqlStore, schema_sql
from fusionframes.serve.store import MAX_ATTEMPTS, Job, StorageHealth, storage_problem

SCHEMA_VERSION = 3

SQLITE_TYPES = {
    "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "real": "REAL",
    "flag": "INTEGER NOT NULL DEFAULT 0",
    "big": "INTEGER",
    "blob": "BLOB",
}
SCHEMA = schema_sql("jobs", "meta", "inputs", SQLITE_TYPES)
# Version 1 -> 2: columns added in place (a data dir of an older server keeps its jobs).
MIGRATION_2 = {
    "request_hash": "TEXT",
    "expected_bytes": "INTEGER NOT NULL DEFAULT 0",
    "delete_requested": "INTEGER NOT NULL DEFAULT 0",
    "owner": "TEXT",
}
# Version 2 -> 3: the ``inputs`` table (created by SCHEMA).


class DataDirBusy(RuntimeError):
    """Another server process holds the data dir."""


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


class JobStore(SqlStore):
    """Jobs in ``<data_dir>/jobs.sqlite3``, their videos in ``<data_dir>/outputs/<id>.<format>``."""

    def __init__(self, data_dir: str | os.PathLike[str], lock: bool = True) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        from fusionframes.serve.artifacts import LocalArtifacts

        self.artifacts = LocalArtifacts(self.data_dir / "outputs")
        self.outputs = self.artifacts.root
        self._dir_lock = DataDirLock(self.data_dir)
        if lock:
            self._dir_lock.acquire()
        self._init_shared(threading.RLock())  # one connection: every use holds the lock
        self._db = sqlite3.connect(
            self.data_dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a job accepted with 201 must survive a power cut
        self._db.execute("PRAGMA foreign_keys=ON")  # a job's input goes with it
        for statement in SCHEMA:
            self._db.execute(statement)
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

    def _query(self, sql: str, args: tuple | list = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, tuple(args)).fetchall()]

    def _now_args(self) -> tuple:
        return (time.time(),)

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
