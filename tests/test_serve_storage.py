"""A full disk must not stop the server: the worker survives every store or job error, fails the job it
could not finish with a clear error, reports itself unhealthy and refuses new jobs (507) while the data
dir takes no writes, and carries on by itself once space returns.

Two tests: one in-process with a real SQLite store whose writes fail with SQLite's own "database or
disk is full" error (injected at the connection, so the failure lands exactly on a progress update,
then on the failure handler), and one with a real server process whose data dir is a 2 MiB tmpfs in
its own mount namespace, filled up and emptied again by the test.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_serve import FAST, ServerProcess, submit, wait_for

FULL = "database or disk is full"


class FillableConnection:
    """A real ``sqlite3.Connection`` whose writes fail as on a full disk while ``full`` is set.

    Claiming a job still works (the store could mark it running before the disk filled), so the
    first write that fails is the job's progress update, then the handler's attempt to fail it."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.full = threading.Event()
        self.fill_after_claim = threading.Event()  # the disk fills the moment a job is claimed

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        head = sql.lstrip().upper()
        claim = head.startswith("UPDATE JOBS SET STATUS=?, STARTED=?")
        if self.full.is_set() and head.startswith(("INSERT", "UPDATE", "DELETE")) and not claim:
            raise sqlite3.OperationalError(FULL)
        cursor = self._connection.execute(sql, *args)
        if claim and self.fill_after_claim.is_set():
            self.full.set()
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


@pytest.fixture()
def app_with_fillable_store(tiny_model_dir: Path, tmp_path: Path) -> Iterator[tuple[Any, FillableConnection]]:
    from fastapi.testclient import TestClient

    from fusionframes.io.checkpoints import model_config_for
    from fusionframes.serve.app import ServeConfig, create_app
    from fusionframes.serve.jobs import JobStore
    from fusionframes.serve.runners import Pipelines

    store = JobStore(tmp_path / "data")
    connection = FillableConnection(store._db)
    store._db = connection  # type: ignore[assignment]
    app = create_app(
        ServeConfig(data_dir=store.data_dir, model=str(tiny_model_dir), device="cpu"),
        model_config=model_config_for(str(tiny_model_dir)),
        store=store,
        pool_loader=lambda: Pipelines(str(tiny_model_dir), "cpu", "float32", threads=1),
    )
    with TestClient(app, base_url="http://127.0.0.1") as client:
        deadline = time.monotonic() + 120
        while client.get("/api/health").status_code != 200:
            assert time.monotonic() < deadline, "the worker did not load the model"
            time.sleep(0.1)
        yield client, connection


def test_worker_survives_a_full_database_and_recovers(
    app_with_fillable_store: tuple[Any, FillableConnection],
) -> None:
    client, connection = app_with_fillable_store
    connection.full.set()
    job = client.post("/api/jobs", json={"prompt": "a red circle", **FAST})
    assert job.status_code == 507  # the insert itself hits the full disk: refused, not a 500
    assert FULL in job.json()["detail"]

    connection.full.clear()
    deadline = time.monotonic() + 10
    while client.get("/api/health").status_code != 200:  # the next probe finds the disk writable
        assert time.monotonic() < deadline, "health did not recover"
        time.sleep(0.1)
    worker = client.app.state.context.pool._threads[0]
    connection.fill_after_claim.set()  # the job's first progress write, then its failure, hit it
    queued = submit(client, num_inference_steps=20)
    deadline = time.monotonic() + 30
    while client.get("/api/health").status_code != 503:
        assert time.monotonic() < deadline, "health never reported the full disk"
        time.sleep(0.05)
    health = client.get("/api/health").json()
    assert health["status"] == "error" and "disk is full" in health["error"]
    assert worker.is_alive()
    refused = client.post("/api/jobs", json={"prompt": "another", **FAST})
    assert refused.status_code == 507 and "disk is full" in refused.json()["detail"]
    assert client.post(f"/api/jobs/{queued['id']}/cancel").status_code in (200, 409, 507)
    assert client.delete(f"/api/jobs/{'0' * 32}").status_code == 404

    connection.fill_after_claim.clear()
    connection.full.clear()  # space returns: the worker records the job's end, then takes new ones
    failed = wait_for(client, queued["id"], ("failed", "cancelled"), timeout=30)
    if failed["status"] == "failed":
        assert "disk is full" in failed["error"]
    assert client.get("/api/health").json()["status"] == "ok"
    assert worker.is_alive()
    wait_for(client, submit(client)["id"], timeout=60)


# ---------------------------------------------------------------------------------------------- tmpfs


def can_mount_tmpfs(where: Path) -> str | None:
    """None when this process may mount a tmpfs in a new mount namespace, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    probe = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "tmpfs",
            where,
        ],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here: {probe.stderr.strip()}"


class TmpfsServer(ServerProcess):
    """The server in its own mount namespace with its data dir on a tmpfs of ``size``; the test
    reaches that tmpfs through ``/proc/PID/root``."""

    size = "2m"

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        real_popen = subprocess.Popen
        data_dir, size = self.data_dir, self.size

        def popen(command: list[str], **kwargs: Any) -> subprocess.Popen:
            mount = f'mount -t tmpfs -o size={size} tmpfs \'{data_dir}\' && exec "$0" "$@"'
            wrapped = ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, *command]
            return real_popen(wrapped, **kwargs)

        subprocess.Popen = popen  # type: ignore[misc, assignment]
        try:
            return super().start()
        finally:
            subprocess.Popen = real_popen  # type: ignore[misc]

    @property
    def inside(self) -> Path:
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/root") / str(self.data_dir).lstrip("/")


def fill(path: Path) -> int:
    written = 0
    with open(path, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
                written += 65536
        except OSError:
            pass
    return written


@pytest.mark.slow  # a server process on a tmpfs filled and emptied
def test_full_tmpfs_disk_is_507_unhealthy_then_recovers(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    reason = can_mount_tmpfs(data)
    if reason:
        pytest.skip(reason)
    server = TmpfsServer(tiny_model_dir, data).start()
    try:
        server.wait_ready()
        with server.client() as client:
            wait_for(client, submit(client)["id"])
            filler = server.inside / "filler"
            assert fill(filler) > 0
            answers = [client.post("/api/jobs", json={"prompt": f"x {i}", **FAST}) for i in range(6)]
            assert {a.status_code for a in answers} <= {201, 507}, [a.text for a in answers]
            accepted = [a.json()["id"] for a in answers if a.status_code == 201]
            deadline = time.monotonic() + 60
            while client.get("/api/health").status_code != 503:
                assert time.monotonic() < deadline, "a full disk was never reported by /api/health"
                if client.post("/api/jobs", json={"prompt": "y", **FAST}).status_code == 201:
                    pass  # a write that still fitted; the worker will fail it when it cannot write
                time.sleep(0.2)
            health = client.get("/api/health").json()
            assert health["status"] == "error" and "disk is full" in health["error"]
            refused = client.post("/api/jobs", json={"prompt": "z", **FAST})
            assert refused.status_code == 507
            listed = client.get("/api/jobs", params={"limit": 500})
            assert listed.status_code == 200
            for job in listed.json()["jobs"]:
                assert client.post(f"/api/jobs/{job['id']}/cancel").status_code in (200, 409, 507)

            filler.unlink()  # space returns
            deadline = time.monotonic() + 30
            while client.get("/api/health").status_code != 200:
                assert time.monotonic() < deadline, "the server did not recover when space returned"
                time.sleep(0.2)
            jobs = client.get("/api/jobs", params={"limit": 500}).json()["jobs"]
            for job in jobs:  # nothing stays running or queued for good
                wait_for(client, job["id"], ("done", "failed", "cancelled"), timeout=60)
            for job_id in accepted:
                ended = client.get(f"/api/jobs/{job_id}").json()
                assert ended["status"] != "failed" or "disk" in ended["error"], ended
            wait_for(client, submit(client)["id"])
    finally:
        server.stop()
