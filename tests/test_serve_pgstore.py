"""The PostgreSQL job store against a real PostgreSQL server started for these tests (see pgserver.py):
schema version row, claims in queue order without double claims, leases, heartbeats, the attempts cap,
ends written only by the claim that holds the job, cancel and delete, and reconnecting after a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pgserver import PostgresServer, find_bindir

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl); .ci/run installs Debian's postgresql")
    server = PostgresServer(bindir).init().start()
    yield server
    server.destroy()


@pytest.fixture()
def database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database per test."""
    name = f"t{time.monotonic_ns()}"
    with psycopg.connect(postgres.url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    yield postgres.url.rsplit("/", 1)[0] + f"/{name}"


def make(url: str, tmp_path: Path, lease_s: float = 30.0):
    from fusionframes.serve.pgstore import PostgresJobStore

    return PostgresJobStore(url, tmp_path / "outputs", lease_s=lease_s)


def test_schema_is_created_once_with_a_version_row(database: str, tmp_path: Path) -> None:
    from fusionframes.serve.pgstore import PG_SCHEMA_VERSION

    stores = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(make(database, tmp_path))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]  # concurrent first starts
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(stores) == 4
    assert stores[0].schema_version() == PG_SCHEMA_VERSION
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute("UPDATE ff_meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(RuntimeError, match="newer fusionframes"):
        make(database, tmp_path)
    for store in stores:
        store.close()


def test_claims_follow_the_queue_and_never_double(database: str, tmp_path: Path) -> None:
    store = make(database, tmp_path)
    ids = [store.create("t2v", {"prompt": str(i)}, {}, ["mp4"])[0].id for i in range(30)]
    claimers = [make(database, tmp_path) for _ in range(3)]
    claimed: dict[int, list[str]] = {i: [] for i in range(3)}

    def take(index: int) -> None:
        while (job := claimers[index].claim()) is not None:
            claimed[index].append(job.id)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [job_id for taken in claimed.values() for job_id in taken]
    assert sorted(everything) == sorted(ids)  # each job claimed exactly once
    for taken in claimed.values():
        assert taken == sorted(taken, key=ids.index)  # in queue order per claimer
    for other in (store, *claimers):
        other.close()


def test_leases_expire_back_to_the_queue_and_the_cap_fails_the_job(database: str, tmp_path: Path) -> None:
    first, second = make(database, tmp_path, lease_s=0.4), make(database, tmp_path, lease_s=0.4)
    job_id = first.create("t2v", {"prompt": "x"}, {}, ["mp4"])[0].id
    later = first.create("t2v", {"prompt": "y"}, {}, ["mp4"])[0].id
    assert first.claim().id == job_id
    for _ in range(3):  # a heartbeat keeps the lease
        time.sleep(0.2)
        assert first.heartbeat([job_id]) == {job_id}
    assert second.claim().id == later  # not the leased one
    assert second.finish(later, {"files": {}}, {"stage": None}) is True
    newer = first.create("t2v", {"prompt": "z"}, {}, ["mp4"])[0].id  # queued after the leased job
    time.sleep(0.6)  # no heartbeat: the lease runs out
    expired = first.get(job_id)  # any read of the table sees it running until a claim expires it
    assert expired.status == "running" and expired.attempts == 1
    again = second.claim()  # the expired job goes back at its place: before the newer one
    assert (again.id, again.attempts) == (job_id, 2)  # and the lost run counts as an attempt
    assert second.queue_position(second.get(newer)) == 1
    assert first.heartbeat([job_id]) == set()
    assert first.finish(job_id, {"files": {}}, {"stage": None}) is False  # the lost claim cannot end it
    assert second.finish(job_id, {"files": {}}, {"stage": None}) is True
    assert second.get(job_id).status == "done"
    assert second.claim().id == newer
    assert second.finish(newer, {"files": {}}, {"stage": None}) is True

    crasher = second.create("t2v", {"prompt": "kills workers"}, {}, ["mp4"])[0].id
    for attempt in (1, 2, 3):
        job = first.claim()
        assert (job.id, job.attempts) == (crasher, attempt)
        time.sleep(0.6)  # the worker "died"
    assert first.claim() is None
    failed = first.get(crasher)
    assert failed.status == "failed" and "3 times" in failed.error
    first.close()
    second.close()


def test_cancel_and_delete_reach_the_claim(database: str, tmp_path: Path) -> None:
    api, worker = make(database, tmp_path), make(database, tmp_path)
    running = api.create("t2v", {"prompt": "x"}, {}, ["mp4"])[0].id
    queued = api.create("t2v", {"prompt": "y"}, {}, ["mp4"])[0].id
    assert worker.claim().id == running
    assert api.request_cancel(queued).status == "cancelled"
    assert api.request_cancel(running).cancel_requested and worker.cancel_requested(running)
    worker.set_progress(running, {"stage": "keyframes", "stages": [], "fraction": 0.5}, persist=True)
    assert api.get(running).progress["fraction"] == 0.5  # progress is visible to another process
    assert api.delete(running) is False and api.get(running) is None  # hidden at once
    assert worker.mark_cancelled(running) is False and not api.exists(running)  # gone at its end
    assert api.delete(queued) is True
    api.close()
    worker.close()


def test_a_restarted_server_is_reconnected(postgres: PostgresServer, database: str, tmp_path: Path) -> None:
    from fusionframes.serve.store import StorageError

    store = make(database, tmp_path)
    job_id = store.create("t2v", {"prompt": "x"}, {}, ["mp4"])[0].id
    postgres.restart()
    with pytest.raises(StorageError, match="unavailable"):
        store.get(job_id)  # the call that finds the connection gone
    assert store.health.problem is not None
    assert store.get(job_id).id == job_id  # the next one reconnects
    assert store.writable(retry_after=0.0) is None
    store.close()


def test_a_cancel_through_another_process_stops_the_job_at_the_next_step(
    database: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """An API process's store flags the cancel between two steps of a job that a worker process's
    store runs; the worker's very next step raises (its store reads the flag at every step)."""
    from fusionframes.io.checkpoints import model_config_for
    from fusionframes.serve.worker import Limits, WorkerPool

    api, worker = make(database, tmp_path), make(database, tmp_path)
    steps: list[int] = []
    job_id = api.create("t2v", {"prompt": "x", "num_inference_steps": 100}, {}, ["mp4"])[0].id

    class Pipeline:  # stands in for the model: 100 steps, the cancel arrives after step 5
        def generate(self, settings: object, generator: object, **kwargs: object) -> None:
            for step in range(1, 101):
                steps.append(step)
                kwargs["callback"]("keyframes", step, 100)  # type: ignore[operator]
                if step == 5:
                    api.request_cancel(job_id)
            raise AssertionError("the cancel was not seen")

    class Pipes:
        t2v = Pipeline()

    pool = WorkerPool(worker, model_config_for(str(tiny_model_dir)), Limits(), loader=Pipes)
    pool.start()
    deadline = time.monotonic() + 30
    while api.get(job_id).status != "cancelled":
        assert time.monotonic() < deadline, api.get(job_id)
        time.sleep(0.05)
    pool.stop()
    assert steps == [1, 2, 3, 4, 5, 6]  # step 6's callback raised
    assert api.get(job_id).progress["stages"][0]["step"] == 5  # where it stopped, for every replica
    api.close()
    worker.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """Each job store (their shared queries are one text, see serve/sqlstore.py)."""
    if request.param == "sqlite":
        from fusionframes.serve.jobs import JobStore

        store = JobStore(tmp_path / "data")
    else:
        store = make(request.getfixturevalue("database"), tmp_path)
    yield store
    store.close()


def test_both_stores_keep_owners_keys_quotas_and_inputs(any_store: object) -> None:
    from fusionframes.serve.store import IdempotencyMismatch, QueueFull, QuotaExceeded

    store: Any = any_store
    alice, _ = store.create("t2v", {"prompt": "a"}, {}, ["mp4"], owner="alice", image=b"\x89PNG...")
    bob, _ = store.create(
        "t2v", {"prompt": "b"}, {}, ["mp4"], owner="bob", idempotency_key="k", request_hash="1"
    )
    assert [job.id for job in store.list_jobs(owner="alice")[0]] == [alice.id]
    assert store.counts("bob")["queued"] == 1 and store.counts()["queued"] == 2
    assert store.create("t2v", {"prompt": "b"}, {}, ["mp4"], idempotency_key="k", request_hash="1") == (
        bob,
        False,
    )
    with pytest.raises(IdempotencyMismatch, match="different request body"):
        store.create("t2v", {"prompt": "c"}, {}, ["mp4"], idempotency_key="k", request_hash="2")
    with pytest.raises(QueueFull):
        store.create("t2v", {"prompt": "c"}, {}, ["mp4"], max_active=2)
    with pytest.raises(QuotaExceeded, match="queued jobs are expected to add"):
        store.create("t2v", {"prompt": "c"}, {}, ["mp4"], quota_bytes=100, expected_bytes=101)
    assert store.input_image(alice.id) == b"\x89PNG..." and store.input_image(bob.id) is None
    assert [store.queue_position(store.get(j.id)) for j in (alice, bob)] == [1, 2]
    claimed = store.claim()
    assert claimed.id == alice.id and store.input_image(alice.id) == b"\x89PNG..."  # kept while it runs
    assert store.finish(alice.id, {"files": {"mp4": 5}, "num_frames": 1, "width": 1, "height": 1}, {})
    assert store.get(alice.id).status == "done" and store.mean_duration() is not None
    assert store.delete(alice.id) is True and store.input_image(alice.id) is None  # gone with its job
    store.set_meta("k", {"a": 1})
    store.set_meta("k", {"a": 2})
    assert store.get_meta("k") == {"a": 2}
