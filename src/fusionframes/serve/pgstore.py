"""The PostgreSQL job store: one queue for API replicas and worker processes on many hosts.

Same interface and job life as :class:`fusionframes.serve.jobs.JobStore` (SQLite, one process), plus:

- **Claiming** is ``SELECT ... ORDER BY seq FOR UPDATE SKIP LOCKED``: workers never wait on each other
  and each job goes to one of them, oldest first.
- **Leases.** A claimed job carries ``lease_until`` (the database's clock, so hosts' clocks do not
  matter) and the token of its claim. The worker renews it (:meth:`heartbeat`); a job whose lease ran
  out goes back to the queue at its place, and one that has been claimed ``MAX_ATTEMPTS`` times is
  failed instead. A job's end is written only by the claim that holds it, so a worker that lost its
  lease can never mark a job done a second time; the finishing claim stays in the row (``claim``:
  host, process id and a random part), which tells which worker made a result.
- **Progress and cancellation** live in the table, so any replica reports them; workers write
  progress at most every ``progress_interval`` seconds and read the cancel flag every ``cancel_poll``.
- **Schema** is created and migrated here, under an advisory lock, with its version in a row of
  ``ff_meta``; never by hand.
- **Connections**: one per thread, re-opened after the server went away (a restart): the failed call
  raises :class:`StorageError` (HTTP 503; a worker waits and tries again), later calls reconnect.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fusionframes.serve.artifacts import Artifacts, LocalArtifacts, S3Artifacts, open_artifacts
from fusionframes.serve.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    FINAL,
    MAX_ATTEMPTS,
    QUEUED,
    RUNNING,
    IdempotencyMismatch,
    Job,
    JobConflict,
    QueueFull,
    QuotaExceeded,
    StorageError,
    StorageHealth,
    StoreBase,
    bytes_per_pixel,
    new_job_id,
    valid_job_id,
)

PG_SCHEMA_VERSION = 1
DEFAULT_LEASE_S = 30.0
SCHEMA_LOCK = 7_311_2026  # pg_advisory_xact_lock key: one process creates or migrates at a time
NOW = "EXTRACT(EPOCH FROM clock_timestamp())"

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS ff_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS ff_jobs (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        mode TEXT NOT NULL,
        status TEXT NOT NULL,
        params TEXT NOT NULL,
        settings TEXT NOT NULL,
        formats TEXT NOT NULL,
        model TEXT,
        num_frames INTEGER,
        created DOUBLE PRECISION NOT NULL,
        started DOUBLE PRECISION,
        finished DOUBLE PRECISION,
        stage TEXT,
        progress TEXT,
        error TEXT,
        result TEXT,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
        attempts INTEGER NOT NULL DEFAULT 0,
        idempotency_key TEXT UNIQUE,
        request_hash TEXT,
        expected_bytes BIGINT NOT NULL DEFAULT 0,
        delete_requested BOOLEAN NOT NULL DEFAULT FALSE,
        claim TEXT,
        lease_until DOUBLE PRECISION,
        owner TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS ff_jobs_by_status ON ff_jobs (status, seq)",
]
# Later versions append (version, [statements]) here; a store migrates up to PG_SCHEMA_VERSION.
MIGRATIONS: list[tuple[int, list[str]]] = []
STORE_ONLY = ("claim", "lease_until")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def job_of(row: dict[str, Any]) -> Job:
    return Job.from_row({k: v for k, v in row.items() if k not in STORE_ONLY})


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class PostgresJobStore(StoreBase):
    """Jobs in PostgreSQL (``url``), their files in ``outputs`` (a folder every host can reach)."""

    leases = True
    progress_interval = 0.5
    cancel_poll = 0.0  # every step: a primary-key read, so a cancel through any replica stops it in one

    def __init__(
        self, url: str, artifacts: str | os.PathLike[str] | Artifacts, lease_s: float = DEFAULT_LEASE_S
    ) -> None:
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self.lease_s = float(lease_s)
        self.artifacts = (
            artifacts if isinstance(artifacts, LocalArtifacts | S3Artifacts) else open_artifacts(artifacts)
        )
        self.outputs = getattr(self.artifacts, "root", None) or self.artifacts.staging
        self.data_dir = self.outputs
        self.health = StorageHealth()
        self._local = threading.local()
        self._connections: list[Any] = []
        self._connections_lock = threading.Lock()
        self._claims: dict[str, str] = {}  # job id -> the token of this process's claim
        self._live: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.process_id = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._migrate()

    # -- connections ---------------------------------------------------------------------------------

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            from psycopg.rows import dict_row

            try:
                connection = self._psycopg.connect(self.url, autocommit=True, row_factory=dict_row)
            except self._psycopg.OperationalError as error:
                raise self._problem(error) from error
            self._local.connection = connection
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    def _problem(self, error: BaseException) -> StorageError:
        full = getattr(error, "sqlstate", None) == "53100"  # disk_full
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        kind = "the job database's disk is full" if full else "the job database is unavailable"
        problem = StorageError(f"{kind} ({text})", full=full)
        self.health.failed(problem)
        return problem

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor in one transaction; a lost connection or a full disk becomes StorageError."""
        connection = self._connection()
        try:
            with connection.transaction(), connection.cursor() as cursor:
                yield cursor
        except (self._psycopg.OperationalError, self._psycopg.errors.DiskFull) as error:
            if connection.broken or connection.closed:
                self._local.connection = None
            raise self._problem(error) from error

    def _query(self, sql: str, args: tuple | list = ()) -> list[dict[str, Any]]:
        with self._transaction() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    def _migrate(self) -> None:
        with self._transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in SCHEMA:
                cursor.execute(statement)
            cursor.execute("SELECT value FROM ff_meta WHERE key='schema_version'")
            row = cursor.fetchone()
            version = int(row["value"]) if row else 0
            if version > PG_SCHEMA_VERSION:
                raise RuntimeError(
                    f"store: the database was written by a newer fusionframes (schema {version}, this "
                    f"one knows {PG_SCHEMA_VERSION}); upgrade this install"
                )
            for target, statements in MIGRATIONS:
                if version < target:
                    for statement in statements:
                        cursor.execute(statement)
            cursor.execute(
                "INSERT INTO ff_meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value",
                (str(PG_SCHEMA_VERSION),),
            )

    def schema_version(self) -> int:
        return int(self._query("SELECT value FROM ff_meta WHERE key='schema_version'")[0]["value"])

    # -- meta ----------------------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        self._query(
            "INSERT INTO ff_meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value",
            (key, json.dumps(value)),
        )

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM ff_meta WHERE key=%s", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def recover(self) -> dict[str, int]:
        """At an API start: only jobs whose lease ran out are touched (other hosts may be running
        jobs right now, so nothing else is; their temporary files are theirs)."""
        with self._transaction() as cursor:
            counts = self._expire(cursor)
        return {**counts, "cancelled": 0, "temp_files_removed": 0}

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
        """As :meth:`JobStore.create`; the limits are checked under a table lock taken for writes
        only (readers and claims go on), so concurrent replicas cannot overshoot them."""
        with self._transaction() as cursor:
            cursor.execute("LOCK TABLE ff_jobs IN SHARE ROW EXCLUSIVE MODE")
            if idempotency_key is not None:
                cursor.execute("SELECT * FROM ff_jobs WHERE idempotency_key=%s", (idempotency_key,))
                row = cursor.fetchone()
                if row is not None:
                    first = job_of(row)
                    if first.request_hash is not None and first.request_hash != request_hash:
                        raise IdempotencyMismatch(
                            f"idempotency-key: {idempotency_key!r} was used for job {first.id} with a "
                            "different request body; use a new key for a new request"
                        )
                    return first, False
            if max_active is not None:
                cursor.execute(
                    "SELECT COUNT(*) AS n FROM ff_jobs WHERE status IN (%s, %s)", (QUEUED, RUNNING)
                )
                active = cursor.fetchone()["n"]
                if active >= max_active:
                    raise QueueFull(
                        f"queue is full: {active} jobs are queued or running (limit {max_active}); "
                        "try again when some have finished"
                    )
            if quota_bytes is not None:
                used = self.disk_usage()
                cursor.execute(
                    "SELECT COALESCE(SUM(expected_bytes), 0) AS n FROM ff_jobs WHERE status IN (%s, %s)",
                    (QUEUED, RUNNING),
                )
                reserved = int(cursor.fetchone()["n"])
                if used + reserved + expected_bytes > quota_bytes:
                    raise QuotaExceeded(
                        f"disk quota exceeded: outputs use {used / 2**20:.3f} MiB and queued jobs are "
                        f"expected to add {reserved / 2**20:.3f} MiB; this job needs about "
                        f"{expected_bytes / 2**20:.3f} MiB of the {quota_bytes / 2**20:.3f} MiB quota"
                    )
            cursor.execute(
                "INSERT INTO ff_jobs (id, mode, status, params, settings, formats, model, num_frames, "
                "created, idempotency_key, request_hash, expected_bytes, progress, owner) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, {NOW}, %s, %s, %s, %s, %s) RETURNING *",
                (
                    new_job_id(),
                    mode,
                    QUEUED,
                    _dumps(params),
                    _dumps(settings),
                    _dumps(formats),
                    model,
                    num_frames,
                    idempotency_key,
                    request_hash,
                    int(expected_bytes),
                    _dumps(progress),
                    owner,
                ),
            )
            return job_of(cursor.fetchone()), True

    def get(self, job_id: str) -> Job | None:
        if not valid_job_id(job_id):
            return None
        rows = self._query("SELECT * FROM ff_jobs WHERE id=%s AND NOT delete_requested", (job_id,))
        if not rows:
            return None
        job = job_of(rows[0])
        with self._lock:
            live = self._live.get(job_id)
        if job.status == RUNNING and live is not None:  # fresher than the table when it runs here
            job.progress, job.stage = live, live.get("stage")
        return job

    def list_jobs(
        self, limit: int = 50, offset: int = 0, status: str | None = None, owner: str | None = None
    ) -> tuple[list[Job], int]:
        clauses, params = ["NOT delete_requested"], []
        for column, value in (("status", status), ("owner", owner)):
            if value is not None:
                clauses.append(f"{column}=%s")
                params.append(value)
        where, args = "WHERE " + " AND ".join(clauses), tuple(params)
        total = self._query(f"SELECT COUNT(*) AS n FROM ff_jobs {where}", args)[0]["n"]
        rows = self._query(
            f"SELECT * FROM ff_jobs {where} ORDER BY seq DESC LIMIT %s OFFSET %s", (*args, limit, offset)
        )
        return [job_of(row) for row in rows], total

    def queue_position(self, job: Job) -> int | None:
        if job.status != QUEUED:
            return None
        rows = self._query("SELECT COUNT(*) AS n FROM ff_jobs WHERE status=%s AND seq<%s", (QUEUED, job.seq))
        return rows[0]["n"] + 1

    def counts(self, owner: str | None = None) -> dict[str, int]:
        where, args = ("AND owner=%s", (owner,)) if owner is not None else ("", ())
        rows = self._query(
            f"SELECT status, COUNT(*) AS n FROM ff_jobs WHERE NOT delete_requested {where} GROUP BY status",
            args,
        )
        counts = {status: 0 for status in (QUEUED, RUNNING, DONE, FAILED, CANCELLED)}
        counts.update({row["status"]: row["n"] for row in rows})
        return counts

    def mean_duration(self, last: int = 20) -> float | None:
        rows = self._query(
            "SELECT AVG(finished - started) AS mean FROM (SELECT finished, started FROM ff_jobs "
            "WHERE status=%s AND started IS NOT NULL ORDER BY seq DESC LIMIT %s) AS recent",
            (DONE, last),
        )
        return rows[0]["mean"]

    def _bytes_per_pixel(self, last: int = 20) -> dict[str, float]:
        rows = self._query(
            "SELECT result FROM ff_jobs WHERE status=%s AND result IS NOT NULL ORDER BY seq DESC LIMIT %s",
            (DONE, last),
        )
        return bytes_per_pixel(json.loads(row["result"]) for row in rows)

    # -- the worker side -----------------------------------------------------------------------------

    def _expire(self, cursor: Any) -> dict[str, int]:
        """Jobs whose lease ran out: deleted if asked, cancelled if asked, failed after
        MAX_ATTEMPTS claims, else back in the queue at their place."""
        expired = (
            f"SELECT id FROM ff_jobs WHERE status='{RUNNING}' AND lease_until < {NOW} FOR UPDATE SKIP LOCKED"
        )
        cursor.execute(f"DELETE FROM ff_jobs WHERE delete_requested AND id IN ({expired}) RETURNING id")
        deleted = [row["id"] for row in cursor.fetchall()]
        cursor.execute(
            f"UPDATE ff_jobs SET status=%s, finished={NOW}, claim=NULL, lease_until=NULL "
            f"WHERE cancel_requested AND id IN ({expired})",
            (CANCELLED,),
        )
        cancelled = cursor.rowcount
        cursor.execute(
            f"UPDATE ff_jobs SET status=%s, finished={NOW}, error=%s, claim=NULL, lease_until=NULL "
            f"WHERE attempts >= %s AND id IN ({expired})",
            (FAILED, f"workers stopped during this job {MAX_ATTEMPTS} times", MAX_ATTEMPTS),
        )
        failed = cursor.rowcount
        cursor.execute(
            "UPDATE ff_jobs SET status=%s, started=NULL, stage=NULL, progress=NULL, claim=NULL, "
            f"lease_until=NULL WHERE id IN ({expired})",
            (QUEUED,),
        )
        requeued = cursor.rowcount
        for job_id in deleted:
            self.remove_files(job_id)
        return {
            "requeued": requeued,
            "failed": failed,
            "deleted": len(deleted),
            "expired_cancelled": cancelled,
        }

    def claim(self) -> Job | None:
        """The oldest queued job (expired leases first go back to the queue), now running here."""
        token = f"{self.process_id}:{uuid.uuid4().hex[:8]}"
        with self._transaction() as cursor:
            self._expire(cursor)
            cursor.execute(
                "SELECT id FROM ff_jobs WHERE status=%s ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                (QUEUED,),
            )
            row = cursor.fetchone()
            if row is None:
                return None
            cursor.execute(
                f"UPDATE ff_jobs SET status=%s, started={NOW}, attempts=attempts+1, stage=NULL, "
                f"progress=NULL, claim=%s, lease_until={NOW} + %s WHERE id=%s RETURNING *",
                (RUNNING, token, self.lease_s, row["id"]),
            )
            job = job_of(cursor.fetchone())
        with self._lock:
            self._claims[job.id] = token
        return job

    def heartbeat(self, job_ids: list[str]) -> set[str]:
        with self._lock:
            tokens = [self._claims[j] for j in job_ids if j in self._claims]
        if not tokens:
            return set()
        rows = self._query(
            f"UPDATE ff_jobs SET lease_until={NOW} + %s WHERE status=%s AND claim = ANY(%s) RETURNING id",
            (self.lease_s, RUNNING, tokens),
        )
        return {row["id"] for row in rows}

    def set_progress(self, job_id: str, progress: dict[str, Any], persist: bool) -> None:
        with self._lock:
            self._live[job_id] = progress
            token = self._claims.get(job_id)
        if persist and token is not None:
            self._query(
                "UPDATE ff_jobs SET stage=%s, progress=%s WHERE id=%s AND claim=%s",
                (progress.get("stage"), _dumps(progress), job_id, token),
            )

    def _end(self, job_id: str, status: str, **columns: Any) -> bool:
        """Leave ``running`` — only through the claim that holds the job."""
        with self._lock:
            token = self._claims.get(job_id)
            live = self._live.get(job_id)
        if token is None:
            return False
        progress = columns.get("progress") or live
        if progress is not None:
            columns.update(progress=progress, stage=progress.get("stage"))
        names = ("status", *columns)
        sets = ", ".join(f"{name}=%s" for name in names)
        values = [status, *(_dumps(v) if isinstance(v, dict) else v for v in columns.values())]
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM ff_jobs WHERE id=%s AND claim=%s AND delete_requested", (job_id, token)
            )
            cursor.execute(
                f"UPDATE ff_jobs SET {sets}, finished={NOW}, lease_until=NULL "
                "WHERE id=%s AND status=%s AND claim=%s",
                (*values, job_id, RUNNING, token),
            )
            updated = cursor.rowcount
        with self._lock:
            self._claims.pop(job_id, None)
            self._live.pop(job_id, None)
        return updated == 1

    def finish(self, job_id: str, result: dict[str, Any], progress: dict[str, Any]) -> bool:
        return self._end(job_id, DONE, result=result, progress=progress)

    def fail(self, job_id: str, error: str) -> bool:
        return self._end(job_id, FAILED, error=error)

    def mark_cancelled(self, job_id: str) -> bool:
        return self._end(job_id, CANCELLED, error=None)

    def requeue(self, job_id: str) -> None:
        """This worker stops (shutdown): the job goes back at its place, the attempt not counted."""
        with self._lock:
            token = self._claims.pop(job_id, None)
            self._live.pop(job_id, None)
        if token is not None:
            self._query(
                "UPDATE ff_jobs SET status=%s, started=NULL, stage=NULL, progress=NULL, claim=NULL, "
                "lease_until=NULL, attempts=attempts-1 WHERE id=%s AND claim=%s AND status=%s",
                (QUEUED, job_id, token, RUNNING),
            )

    def release(self, job_id: str) -> None:
        """Forget a claim that was lost (its lease ran out and another worker may have the job)."""
        with self._lock:
            self._claims.pop(job_id, None)
            self._live.pop(job_id, None)

    def owns(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._claims

    def cancel_requested(self, job_id: str) -> bool:
        rows = self._query("SELECT cancel_requested FROM ff_jobs WHERE id=%s", (job_id,))
        return bool(rows and rows[0]["cancel_requested"])

    # -- cancelling and deleting ---------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> Job:
        with self._transaction() as cursor:
            cursor.execute(
                "SELECT status FROM ff_jobs WHERE id=%s AND NOT delete_requested FOR UPDATE", (job_id,)
            )
            row = cursor.fetchone()
            if row is None:
                raise KeyError(job_id)
            if row["status"] in FINAL:
                raise JobConflict(f"job {job_id} is already {row['status']}; nothing to cancel")
            if row["status"] == QUEUED:
                cursor.execute(
                    f"UPDATE ff_jobs SET status=%s, finished={NOW}, cancel_requested=TRUE WHERE id=%s",
                    (CANCELLED, job_id),
                )
            else:
                cursor.execute("UPDATE ff_jobs SET cancel_requested=TRUE WHERE id=%s", (job_id,))
        job = self.get(job_id)
        assert job is not None
        return job

    def delete(self, job_id: str) -> bool:
        with self._transaction() as cursor:
            cursor.execute(
                "SELECT status FROM ff_jobs WHERE id=%s AND NOT delete_requested FOR UPDATE", (job_id,)
            )
            row = cursor.fetchone()
            if row is None:
                raise KeyError(job_id)
            if row["status"] == RUNNING:
                cursor.execute(
                    "UPDATE ff_jobs SET cancel_requested=TRUE, delete_requested=TRUE WHERE id=%s", (job_id,)
                )
                return False
            cursor.execute("DELETE FROM ff_jobs WHERE id=%s", (job_id,))
        self.remove_files(job_id)
        return True

    def exists(self, job_id: str) -> bool:
        return bool(self._query("SELECT 1 AS one FROM ff_jobs WHERE id=%s", (job_id,)))

    def wait_time(self) -> float:
        """For tests and the benchmark: seconds until the earliest lease runs out (0 if none)."""
        rows = self._query(
            f"SELECT MIN(lease_until) - {NOW} AS left FROM ff_jobs WHERE status=%s", (RUNNING,)
        )
        left = rows[0]["left"]
        return max(0.0, float(left)) if left is not None else 0.0


def open_store(
    url: str, outputs: str | os.PathLike[str], lease_s: float = DEFAULT_LEASE_S
) -> PostgresJobStore:
    """A PostgreSQL store, retrying the first connection for a few seconds (a server starting up)."""
    import psycopg

    deadline = time.monotonic() + 10
    while True:
        try:
            return PostgresJobStore(url, outputs, lease_s)
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
