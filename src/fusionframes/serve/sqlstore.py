"""The SQL both job stores run: one text per query, written once, for SQLite and PostgreSQL.

The two stores differ in how they connect, lock, claim and recover (see :mod:`fusionframes.serve.jobs`
and :mod:`fusionframes.serve.pgstore`); everything else (creating a job under the queue and quota
limits, reading, progress, ending, cancelling, deleting) is the same query on both. Queries are
written with ``?`` placeholders and ``{jobs}``/``{meta}``/``{inputs}``/``{now}`` names; a store says
what they are (:meth:`SqlStore.sql`). Both databases take ``TRUE``/``FALSE``, ``ON CONFLICT ... DO
UPDATE`` and ``RETURNING``, so no query needs a second spelling.

Stores with leases (PostgreSQL) end, re-queue and write progress only through the claim that holds a
job (``claim`` column); SQLite has one process and no claims.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any

from fusionframes.serve.store import (
    CANCELLED,
    DONE,
    FAILED,
    FINAL,
    QUEUED,
    RUNNING,
    IdempotencyMismatch,
    Job,
    JobConflict,
    QueueFull,
    QuotaExceeded,
    StoreBase,
    bytes_per_pixel,
    dumps,
    new_job_id,
    valid_job_id,
)

STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)

# The job table of both stores; ``{serial}``, ``{real}``, ``{flag}`` and ``{big}`` are each database's
# spelling of an insertion counter, a float, a false-by-default boolean and a 64-bit integer.
JOB_COLUMNS = (
    "seq {serial}",
    "id TEXT NOT NULL UNIQUE",
    "mode TEXT NOT NULL",
    "status TEXT NOT NULL",
    "params TEXT NOT NULL",
    "settings TEXT NOT NULL",
    "formats TEXT NOT NULL",
    "model TEXT",
    "num_frames INTEGER",
    "created {real} NOT NULL",
    "started {real}",
    "finished {real}",
    "stage TEXT",
    "progress TEXT",
    "error TEXT",
    "result TEXT",
    "cancel_requested {flag}",
    "attempts INTEGER NOT NULL DEFAULT 0",
    "idempotency_key TEXT UNIQUE",
    "request_hash TEXT",
    "expected_bytes {big} NOT NULL DEFAULT 0",
    "delete_requested {flag}",
    "owner TEXT",
)


def schema_sql(
    jobs: str, meta: str, inputs: str, types: dict[str, str], extra: tuple[str, ...] = ()
) -> list[str]:
    """The statements that create a store's tables (``extra``: columns only that store has)."""
    columns = ",\n    ".join(column.format(**types) for column in (*JOB_COLUMNS, *extra))
    return [
        f"CREATE TABLE IF NOT EXISTS {jobs} (\n    {columns}\n)",
        f"CREATE INDEX IF NOT EXISTS {jobs}_by_status ON {jobs} (status, seq)",
        f"CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {inputs} "
        f"(id TEXT PRIMARY KEY REFERENCES {jobs} (id) ON DELETE CASCADE, image {types['blob']} NOT NULL)",
    ]


class SqlStore(StoreBase):
    """The shared queries. A store sets the names below and gives :meth:`_transaction` (a context
    yielding something with ``execute(sql, args)`` that returns a cursor) and :meth:`_query`."""

    jobs_table = "jobs"
    meta_table = "meta"
    inputs_table = "inputs"
    placeholder = "?"
    now_sql = "?"  # the database's clock as Unix seconds
    for_update = ""  # row locks where the database has them
    end_extra = ""  # more columns cleared when a job leaves ``running``
    requeue_extra = ""  # ... and when it goes back to the queue
    _lock: Any
    _live: dict[str, dict[str, Any]]  # per-step progress of jobs running in this process
    _claims: dict[str, str]  # job id -> the token of this process's claim (stores with leases)

    def _init_shared(self, lock: Any) -> None:
        self._lock = lock
        self._live = {}
        self._claims = {}

    def sql(self, text: str) -> str:
        names = {"jobs": self.jobs_table, "meta": self.meta_table, "inputs": self.inputs_table}
        return text.format(now=self.now_sql, **names).replace("?", self.placeholder)

    def _transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _query(self, sql: str, args: tuple | list = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _rows(self, text: str, args: tuple | list = ()) -> list[dict[str, Any]]:
        return self._query(self.sql(text), args)

    def _run(self, tx: Any, text: str, args: tuple | list = ()) -> Any:
        return tx.execute(self.sql(text), tuple(args))

    # -- meta ----------------------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        with self._transaction() as tx:
            self._run(
                tx,
                "INSERT INTO {meta} (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._rows("SELECT value FROM {meta} WHERE key=?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    # -- creating and reading ------------------------------------------------------------------------

    def _lock_for_create(self, tx: Any) -> None:
        """Whatever keeps two creates from passing the limits together (SQLite: BEGIN IMMEDIATE)."""

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
        image: bytes | None = None,
    ) -> tuple[Job, bool]:
        """Queue a job; returns ``(job, created)``. A repeated ``idempotency_key`` returns the first job
        when ``request_hash`` matches the first request's, and raises :class:`IdempotencyMismatch`
        when it does not. ``image``: an input image (image-to-video), kept beside the job and deleted
        with it, so a worker on any host reads it from the store.

        The queue-length and quota checks run in the same transaction as the insert, so concurrent
        requests cannot overshoot the limits. The quota counts the bytes of results plus the expected
        size of every queued or running job (``expected_bytes``), so a long queue cannot overshoot it.
        """
        with self._transaction() as tx:
            self._lock_for_create(tx)
            if idempotency_key is not None:
                row = self._run(tx, "SELECT * FROM {jobs} WHERE idempotency_key=?", (idempotency_key,))
                first = row.fetchone()
                if first is not None:
                    return self._repeated(Job.from_row(first), idempotency_key, request_hash), False
            active_sql = "FROM {jobs} WHERE status IN (?, ?)"
            if max_active is not None:
                active = self._run(tx, f"SELECT COUNT(*) AS n {active_sql}", (QUEUED, RUNNING)).fetchone()[
                    "n"
                ]
                if active >= max_active:
                    raise QueueFull(
                        f"queue is full: {active} jobs are queued or running (limit {max_active}); "
                        "try again when some have finished"
                    )
            if quota_bytes is not None:
                reserved = self._run(
                    tx, f"SELECT COALESCE(SUM(expected_bytes), 0) AS n {active_sql}", (QUEUED, RUNNING)
                ).fetchone()["n"]
                self._check_quota(int(reserved), expected_bytes, quota_bytes)
            job_id = new_job_id()
            values = (job_id, mode, QUEUED, dumps(params), dumps(settings), dumps(formats), model)
            values += (num_frames, idempotency_key, request_hash, int(expected_bytes), dumps(progress), owner)
            inserted = self._run(
                tx,
                "INSERT INTO {jobs} (id, mode, status, params, settings, formats, model, num_frames, "
                "idempotency_key, request_hash, expected_bytes, progress, owner, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {now}) RETURNING *",
                values + self._now_args(),
            ).fetchall()[0]  # read to the end: SQLite commits only a finished statement
            if image is not None:
                self._run(tx, "INSERT INTO {inputs} (id, image) VALUES (?, ?)", (job_id, image))
            return Job.from_row(inserted), True

    def _now_args(self) -> tuple:
        """The arguments ``{now}`` takes (SQLite: the time; PostgreSQL: none, its own clock)."""
        return ()

    @staticmethod
    def _repeated(first: Job, key: str, request_hash: str | None) -> Job:
        if first.request_hash is not None and first.request_hash != request_hash:
            raise IdempotencyMismatch(
                f"idempotency-key: {key!r} was used for job {first.id} with a different request body; "
                "use a new key for a new request"
            )
        return first

    def _check_quota(self, reserved: int, expected: int, quota: int) -> None:
        used = self.disk_usage()
        if used + reserved + expected > quota:
            raise QuotaExceeded(
                f"disk quota exceeded: outputs use {used / 2**20:.3f} MiB and queued jobs are "
                f"expected to add {reserved / 2**20:.3f} MiB; this job needs about "
                f"{expected / 2**20:.3f} MiB of the {quota / 2**20:.3f} MiB quota; "
                "delete old jobs (DELETE /api/jobs/{id}) or wait for queued ones"
            )

    def _with_live(self, job: Job) -> Job:
        """A job running in this process shows its per-step progress (fresher than the table)."""
        with self._lock:
            live = self._live.get(job.id)
        if job.status == RUNNING and live is not None:
            job.progress, job.stage = live, live.get("stage")
        return job

    def get(self, job_id: str) -> Job | None:
        if not valid_job_id(job_id):
            return None
        rows = self._rows("SELECT * FROM {jobs} WHERE id=? AND delete_requested=FALSE", (job_id,))
        return self._with_live(Job.from_row(rows[0])) if rows else None

    def input_image(self, job_id: str) -> bytes | None:
        """The image a job was given (image-to-video), or None."""
        rows = self._rows("SELECT image FROM {inputs} WHERE id=?", (job_id,))
        return bytes(rows[0]["image"]) if rows else None

    def list_jobs(
        self, limit: int = 50, offset: int = 0, status: str | None = None, owner: str | None = None
    ) -> tuple[list[Job], int]:
        """Newest first (the gallery order); ``status`` and ``owner`` filter."""
        clauses, args = ["delete_requested=FALSE"], []
        for column, value in (("status", status), ("owner", owner)):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value)
        where = "WHERE " + " AND ".join(clauses)
        total = self._rows(f"SELECT COUNT(*) AS n FROM {{jobs}} {where}", args)[0]["n"]
        rows = self._rows(
            f"SELECT * FROM {{jobs}} {where} ORDER BY seq DESC LIMIT ? OFFSET ?", [*args, limit, offset]
        )
        return [self._with_live(Job.from_row(row)) for row in rows], total

    def queue_position(self, job: Job) -> int | None:
        """1 for the next job to run, 2 for the one after, ...; None unless queued."""
        if job.status != QUEUED:
            return None
        rows = self._rows("SELECT COUNT(*) AS n FROM {jobs} WHERE status=? AND seq<?", (QUEUED, job.seq))
        return rows[0]["n"] + 1

    def counts(self, owner: str | None = None) -> dict[str, int]:
        where, args = ("AND owner=?", (owner,)) if owner is not None else ("", ())
        rows = self._rows(
            f"SELECT status, COUNT(*) AS n FROM {{jobs}} WHERE delete_requested=FALSE {where} "
            "GROUP BY status",
            args,
        )
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({row["status"]: row["n"] for row in rows})
        return counts

    def mean_duration(self, last: int = 20) -> float | None:
        """Average run time of the last finished jobs, for queue ETAs."""
        rows = self._rows(
            "SELECT AVG(finished - started) AS mean FROM (SELECT finished, started FROM {jobs} "
            "WHERE status=? AND started IS NOT NULL ORDER BY seq DESC LIMIT ?) AS recent",
            (DONE, last),
        )
        return rows[0]["mean"]

    def _bytes_per_pixel(self, last: int = 20) -> dict[str, float]:
        rows = self._rows(
            "SELECT result FROM {jobs} WHERE status=? AND result IS NOT NULL ORDER BY seq DESC LIMIT ?",
            (DONE, last),
        )
        return bytes_per_pixel(json.loads(row["result"]) for row in rows)

    def exists(self, job_id: str) -> bool:
        """The job has a row (a job hidden by a pending delete included)."""
        return bool(self._rows("SELECT 1 AS one FROM {jobs} WHERE id=?", (job_id,)))

    def cancel_requested(self, job_id: str) -> bool:
        rows = self._rows("SELECT cancel_requested FROM {jobs} WHERE id=?", (job_id,))
        return bool(rows and rows[0]["cancel_requested"])

    # -- the worker side -----------------------------------------------------------------------------

    def _mine(self, job_id: str) -> tuple[bool, str, tuple]:
        """Whether this process may write the job's row, and the SQL (and args) that say "only
        through this process's claim" (stores without leases: any row of a running job)."""
        with self._lock:
            token = self._claims.get(job_id)
        if not self.leases:
            return True, "", ()
        return token is not None, " AND claim=?", (token,)

    def set_progress(self, job_id: str, progress: dict[str, Any], persist: bool) -> None:
        """Live progress for status requests here; written to the table when ``persist`` (stage
        changes, and every ``progress_interval`` s for stores other processes read)."""
        with self._lock:
            self._live[job_id] = progress
        mine, clause, args = self._mine(job_id)
        if persist and mine:
            with self._transaction() as tx:
                self._run(
                    tx,
                    f"UPDATE {{jobs}} SET stage=?, progress=? WHERE id=? AND status=?{clause}",
                    (progress.get("stage"), dumps(progress), job_id, RUNNING, *args),
                )

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._claims.pop(job_id, None)
            self._live.pop(job_id, None)

    def _end(self, job_id: str, status: str, **columns: Any) -> bool:
        """Leave ``running`` (through this process's claim, where there are claims); the last live
        progress is kept, so a cancelled job shows where it stopped. False when the job is gone or
        another claim holds it."""
        mine, clause, args = self._mine(job_id)
        with self._lock:
            live = self._live.get(job_id)
        if not mine:
            return False
        progress = columns.get("progress") or live
        if progress is not None:
            columns.update(progress=progress, stage=progress.get("stage"))
        sets = ", ".join(f"{name}=?" for name in ("status", *columns))
        values = [status, *(dumps(v) if isinstance(v, dict) else v for v in columns.values())]
        with self._transaction() as tx:
            # A job deleted while it ran (DELETE answered 202) goes now, instead of ending.
            self._run(
                tx,
                f"DELETE FROM {{jobs}} WHERE id=? AND status=? AND delete_requested=TRUE{clause}",
                (job_id, RUNNING, *args),
            )
            updated = self._run(
                tx,
                f"UPDATE {{jobs}} SET {sets}, finished={{now}}{self.end_extra} "
                f"WHERE id=? AND status=?{clause}",
                (*values, *self._now_args(), job_id, RUNNING, *args),
            ).rowcount
        self._forget(job_id)
        return updated == 1

    def finish(self, job_id: str, result: dict[str, Any], progress: dict[str, Any]) -> bool:
        """Mark done (only after the output files are in place); False if the job was deleted."""
        return self._end(job_id, DONE, result=result, progress=progress)

    def fail(self, job_id: str, error: str) -> bool:
        return self._end(job_id, FAILED, error=error)

    def mark_cancelled(self, job_id: str) -> bool:
        return self._end(job_id, CANCELLED, error=None)

    def requeue(self, job_id: str) -> None:
        """Back to the queue at its place, the attempt not counted (this worker is shutting down)."""
        mine, clause, args = self._mine(job_id)
        self._forget(job_id)
        if mine:
            with self._transaction() as tx:
                self._run(
                    tx,
                    "UPDATE {jobs} SET status=?, started=NULL, stage=NULL, progress=NULL, "
                    f"attempts=attempts-1{self.requeue_extra} WHERE id=? AND status=?{clause}",
                    (QUEUED, job_id, RUNNING, *args),
                )

    # -- cancelling and deleting ---------------------------------------------------------------------

    def _status_for_change(self, tx: Any, job_id: str) -> str:
        row = self._run(
            tx,
            f"SELECT status FROM {{jobs}} WHERE id=? AND delete_requested=FALSE{self.for_update}",
            (job_id,),
        ).fetchone()
        if row is None:
            raise KeyError(job_id)
        return row["status"]

    def request_cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is flagged (its worker stops it)."""
        with self._transaction() as tx:
            status = self._status_for_change(tx, job_id)
            if status in FINAL:
                raise JobConflict(f"job {job_id} is already {status}; nothing to cancel")
            if status == QUEUED:
                self._run(
                    tx,
                    "UPDATE {jobs} SET status=?, finished={now}, cancel_requested=TRUE WHERE id=?",
                    (CANCELLED, *self._now_args(), job_id),
                )
            else:
                self._run(tx, "UPDATE {jobs} SET cancel_requested=TRUE WHERE id=?", (job_id,))
        job = self.get(job_id)
        assert job is not None
        return job

    def delete(self, job_id: str) -> bool:
        """Remove a job, its input and every file it owns. True when it is gone now; False for a
        running job, which is flagged for cancellation and deletion: it is hidden at once (404) and
        its row and files go when its worker stops it (within a step), so no caller waits on a worker."""
        with self._transaction() as tx:
            if self._status_for_change(tx, job_id) == RUNNING:
                self._run(
                    tx, "UPDATE {jobs} SET cancel_requested=TRUE, delete_requested=TRUE WHERE id=?", (job_id,)
                )
                return False
            self._run(tx, "DELETE FROM {jobs} WHERE id=?", (job_id,))
        self.remove_files(job_id)
        return True


__all__ = ["SqlStore"]
