"""Serving beyond one process: two API processes (``serve --workers 0``) and three ``fusionframes worker``
processes share one real PostgreSQL store (started by the tests, see pgserver.py) and one artifacts
folder, with the tiny model. What must hold: every job done exactly once, in queue order per worker;
a worker SIGKILLed mid-job loses nothing (its lease runs out and another finishes the job) and no
partial video is ever visible; an API SIGKILLed loses no accepted job; a cancel through one API stops
the job within a step on whichever worker runs it; a PostgreSQL restart is survived without a
duplicate result.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pgserver import PostgresServer, find_bindir
from test_serve import FAST, SLOW_STEPS, TOKEN, free_port, server_env, wait_for

from fusionframes.io.video import read_video

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[test]')")
LEASE_S = 3.0

pytestmark = pytest.mark.slow  # two API and three worker processes on a PostgreSQL server: minutes


class Process:
    """A ``python -m fusionframes.cli`` command in the background, logging to a file."""

    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name, self.args = name, args
        self.log = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Process:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fusionframes.cli", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(),
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait()

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Api(Process):
    def __init__(self, name: str, store: str, artifacts: Path, model: Path, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["serve", "--store", store, "--artifacts", str(artifacts), "--workers", "0"]
        args += ["--model", str(model), "--port", str(self.port), "--token", TOKEN, "--lease", str(LEASE_S)]
        super().__init__(name, args, log_dir)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)

    def wait_ready(self, timeout: float = 120) -> Api:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    pytest.fail(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
                try:
                    if client.get("/api/health").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        pytest.fail(f"{self.name} not ready:\n{self.log.read_text()[-3000:]}")


class Cluster:
    """The PostgreSQL server, a database, an artifacts folder, 2 APIs and 3 workers."""

    def __init__(self, postgres: PostgresServer, model: Path, root: Path) -> None:
        self.postgres, self.model, self.root = postgres, model, root
        self.store = postgres.url
        self.artifacts = root / "artifacts"
        self.apis = [Api(f"api-{i}", self.store, self.artifacts, model, root) for i in range(2)]
        self.workers = [self.worker(i) for i in range(3)]

    def worker(self, index: int) -> Process:
        args = [
            "worker",
            "--store",
            self.store,
            "--artifacts",
            str(self.artifacts),
            "--model",
            str(self.model),
        ]
        return Process(f"worker-{index}", [*args, "--threads", "1", "--lease", str(LEASE_S)], self.root)

    def start(self) -> Cluster:
        for process in (*self.apis, *self.workers):
            process.start()
        for api in self.apis:
            api.wait_ready()
        return self

    def stop(self) -> None:
        for process in (*self.apis, *self.workers):
            process.stop()

    def rows(self) -> list[dict[str, Any]]:
        with psycopg.connect(self.store, autocommit=True) as connection:
            cursor = connection.execute(
                "SELECT id, seq, status, attempts, claim, started FROM ff_jobs ORDER BY seq"
            )
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def worker_running(self, job_id: str) -> Process:
        """The worker process whose claim holds ``job_id`` (the claim names host:pid:...)."""
        claim = next(row["claim"] for row in self.rows() if row["id"] == job_id)
        pid = int(claim.split(":")[1])
        return next(w for w in self.workers if w.process is not None and w.pid == pid)


@pytest.fixture(scope="module")
def cluster(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl); .ci/run installs Debian's postgresql")
    postgres = PostgresServer(bindir).init().start()
    cluster = Cluster(postgres, tiny_model_dir, tmp_path_factory.mktemp("multihost"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        postgres.destroy()


def submit(client: httpx.Client, **body: Any) -> dict:
    response = client.post("/api/jobs", json={"prompt": "a red circle moving right", **FAST, **body})
    assert response.status_code == 201, response.text
    return response.json()


def wait_running(client: httpx.Client, job_id: str, min_step: int = 2, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] == "running" and job["stages"] and job["stages"][0]["step"] >= min_step:
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    pytest.fail(f"job {job_id} did not start")


def test_fifty_jobs_across_two_apis_run_once_each_in_queue_order(cluster: Cluster) -> None:
    def create(i: int) -> str:
        with cluster.apis[i % 2].client() as client:
            return submit(client, prompt=f"a red circle number {i}", seed=i)["id"]

    with ThreadPoolExecutor(10) as pool:
        ids = list(pool.map(create, range(50)))
    with cluster.apis[0].client() as a, cluster.apis[1].client() as b:
        jobs = [wait_for(a if i % 2 else b, job_id, timeout=300) for i, job_id in enumerate(ids)]
        assert [job["status"] for job in jobs] == ["done"] * 50
        assert all(job["attempts"] == 1 for job in jobs)  # none run twice
        assert b.get(f"/api/jobs/{ids[0]}").json()["result"] == a.get(f"/api/jobs/{ids[0]}").json()["result"]
    rows = {row["id"]: row for row in cluster.rows()}
    by_worker: dict[str, list[dict]] = {}
    for job_id in ids:
        row = rows[job_id]
        by_worker.setdefault(row["claim"].rsplit(":", 1)[0], []).append(row)
    assert len(by_worker) >= 2  # the queue was shared
    for taken in by_worker.values():  # each worker took its jobs in queue order
        taken.sort(key=lambda row: row["started"])
        assert [row["seq"] for row in taken] == sorted(row["seq"] for row in taken)
    outputs = sorted(p.name for p in cluster.artifacts.iterdir() if p.suffix == ".mp4")
    assert all(f"{job_id}.mp4" in outputs for job_id in ids)  # one result per job
    assert not [p for p in cluster.artifacts.iterdir() if p.name.startswith(".")]
    frames, _ = read_video(cluster.artifacts / f"{ids[0]}.mp4")
    assert frames.shape == (4, 64, 64, 3)


def test_cancel_through_one_api_stops_the_job_on_any_worker(cluster: Cluster) -> None:
    with cluster.apis[1].client() as b, cluster.apis[0].client() as a:
        job = submit(b, num_inference_steps=SLOW_STEPS)
        wait_running(a, job["id"], min_step=3)
        at_cancel = a.post(f"/api/jobs/{job['id']}/cancel").json()["stages"][0]["step"]
        stopped = wait_for(b, job["id"], ("cancelled",), timeout=30)
        # progress is written every 0.5 s and the flag read every step: stopped within one step of
        # the step the worker had reached when the cancel was stored
        assert stopped["stages"][0]["step"] < SLOW_STEPS
        assert stopped["stages"][0]["step"] >= at_cancel
        assert not list(cluster.artifacts.glob(f"*{job['id']}*"))


def test_sigkilled_worker_loses_nothing_and_no_partial_file_is_visible(cluster: Cluster) -> None:
    with cluster.apis[0].client() as client:
        job = submit(client, num_inference_steps=120, seed=3)
        wait_running(client, job["id"], min_step=5)
        victim = cluster.worker_running(job["id"])
        victim.kill()
        index = cluster.workers.index(victim)
        deadline = time.monotonic() + 120
        while (status := client.get(f"/api/jobs/{job['id']}").json())["status"] != "done":
            assert status["status"] in ("running", "queued"), status
            assert client.get(f"/api/jobs/{job['id']}/video").status_code == 409
            published = cluster.artifacts / f"{job['id']}.mp4"
            if published.exists():  # renamed into place only when complete (done follows it)
                assert read_video(published)[0].shape == (4, 64, 64, 3)
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status["attempts"] == 2  # the lease ran out, another worker finished it
        video = client.get(f"/api/jobs/{job['id']}/video")
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        frames, _ = read_video(cluster.artifacts / f"{job['id']}.mp4")
        assert frames.shape == (4, 64, 64, 3)
    cluster.workers[index] = cluster.worker(index).start()  # back to three for the next tests


def test_sigkilled_api_loses_no_accepted_job(cluster: Cluster) -> None:
    with cluster.apis[0].client() as client:
        ids = [submit(client, prompt=f"a blue square {i}")["id"] for i in range(5)]
    cluster.apis[0].kill()
    with cluster.apis[1].client() as other:
        for job_id in ids:
            assert wait_for(other, job_id, timeout=120)["attempts"] == 1
    replacement = Api("api-0b", cluster.store, cluster.artifacts, cluster.model, cluster.root)
    cluster.apis[0] = replacement.start().wait_ready()


def wait_final(client: httpx.Client, job_id: str, timeout: float = 180) -> dict:
    """Like ``wait_for``, but a 503 (the database away) or a dropped connection is waited out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = client.get(f"/api/jobs/{job_id}")
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            job = response.json()
            if job["status"] in ("done", "failed", "cancelled"):
                return job
        elif response is not None:
            assert response.status_code == 503, response.text
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not finish")


def test_postgres_restart_while_workers_run(cluster: Cluster) -> None:
    with cluster.apis[1].client() as client:
        ids = [submit(client, prompt=f"a star {i}", num_inference_steps=40, seed=i)["id"] for i in range(6)]
        wait_running(client, ids[0], min_step=2)
        cluster.postgres.restart(down_s=1.0)
        jobs = [wait_final(client, job_id) for job_id in ids]
    assert [job["status"] for job in jobs] == ["done"] * 6
    rows = [row for row in cluster.rows() if row["id"] in set(ids)]
    assert [row["status"] for row in rows] == ["done"] * 6  # one row, one result each
    for job_id in ids:
        assert (cluster.artifacts / f"{job_id}.mp4").is_file()
    assert all(worker.alive() for worker in cluster.workers)
