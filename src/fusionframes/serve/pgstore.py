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

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fusionframes.serve.artifacts import Artifacts, LocalArtifacts, S3Artifacts, open_artifacts
from fusionframes.serve.sqlstore import SqlStore, schema_sql
from fusionframes.serve.store import (
    CANCELLED,
    FAILED,
    MAX_ATTEMPTS,
    QUEUED,
    RUNNING,
    Job,
    StorageError,
    StorageHealth,
)

PG_SCHEMA_VERSION = 2
DEFAULT_LEASE_S = 30.0
SCHEMA_LOCK = 7_311_2026  # pg_advisory_xact_lock key: one process creates or migrates at a time
NOW = "EXTRACT(EPOCH FROM clock_timestamp())"

PG_TYPES = {
    "serial": "BIGSERIAL PRIMARY KEY",
    "real": "DOUBLE PRECISION",
    "flag": "BOOLEAN NOT NULL DEFAULT FALSE",
    "big": "BIGINT",
    "blob": "BYTEA",
}
# claim: host:pid:random of the claim that holds (or finished) the job; lease_until: the database's clock
SCHEMA_1 = schema_sql("ff_jobs", "ff_meta", "ff_inputs", PG_TYPES, ("claim TEXT", "lease_until {real}"))
SCHEMA = SCHEMA_1[:3]  # version 1; the inputs table came with version 2
# Later versions append (version, [statements]) here; a store migrates up to PG_SCHEMA_VERSION.
MIGRATIONS: list[tuple[int, list[str]]] = [(2, SCHEMA_1[3:])]  # 2: a job's input image (image-to-video)


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class PostgresJobStore(SqlStore):
    """Jobs in PostgreSQL (``url``), their files in ``outputs`` (a folder every host can reach)."""

    jobs_table, meta_table, inputs_table = "ff_jobs", "ff_meta", "ff_inputs"
    placeholder = "%s"
    now_sql = NOW
    for_update = " FOR UPDATE"
    end_extra = ", lease_until=NULL"  # the claim stays: it tells which worker made the result
    requeue_extra = ", claim=NULL, lease_until=NULL"
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
        self._init_shared(threading.Lock())
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

    def recover(self) -> dict[str, int]:
        """At an API start: only jobs whose lease ran out are touched (other hosts may be running
        jobs right now, so nothing else is; their temporary files are theirs)."""
        with self._transaction() as cursor:
            counts = self._expire(cursor)
        return {**counts, "cancelled": 0, "temp_files_removed": 0}

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
            job = Job.from_row(cursor.fetchone())
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

    def release(self, job_id: str) -> None:
        """Forget a claim that was lost (its lease ran out and another worker may have the job)."""
        self._forget(job_id)

    def owns(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._claims

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
        except (StorageError, psycopg.OperationalError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
