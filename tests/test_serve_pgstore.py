"""The PostgreSQL job store against a real PostgreSQL server started for these tests (see pgserver.py):
schema version row, claims in queue order without double claims, leases, heartbeats, the attempts cap,
ends written only by the claim that holds the job, cancel and delete, and reconnecting after a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

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
    time.sleep(0.6)  # no heartbeat: the lease runs out
    again = second.claim()
    assert (again.id, again.attempts) == (job_id, 2)
    assert first.heartbeat([job_id]) == set()
    assert first.finish(job_id, {"files": {}}, {"stage": None}) is False  # the lost claim cannot end it
    assert second.finish(job_id, {"files": {}}, {"stage": None}) is True
    assert second.get(job_id).status == "done"

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
