"""The serving queue: jobs per minute with 1, 2 and 3 ``fusionframes worker`` processes on one
PostgreSQL store (the tiny test model, 2 denoising steps, 4 frames of 64x64), and the store's own
overhead per job (claim + 3 heartbeats + 2 progress writes + finish) for SQLite and PostgreSQL.

PostgreSQL is a throw-away cluster started here (Debian's binaries; as root it runs as ``postgres``),
with ``fsync=off`` like the tests. Run: ``python benchmarks/serve_queue.py [--jobs 30]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' temporary PostgreSQL server and tiny model

from pgserver import PostgresServer, find_bindir  # noqa: E402

FAST = {"prompt": "a red circle moving right", "num_inference_steps": 2, "fps": "low"}


def store_overhead(store, jobs: int) -> float:
    """Milliseconds per job of the store calls a worker makes around one job."""
    for i in range(jobs):
        store.create("t2v", {"prompt": str(i)}, {}, ["mp4"])
    started = time.perf_counter()
    for _ in range(jobs):
        job = store.claim()
        for _ in range(3):
            store.heartbeat([job.id])
        for step in range(2):
            store.set_progress(
                job.id, {"stage": "keyframes", "stages": [], "fraction": step / 2}, persist=True
            )
        store.finish(job.id, {"files": {}}, {"stage": None, "stages": [], "fraction": 1.0})
    return (time.perf_counter() - started) * 1000 / jobs


def queue_jobs(store, model_config, count: int) -> list[str]:
    from fusionframes.serve.worker import Limits, prepare

    ids = []
    for i in range(count):
        prepared = prepare(model_config, "t2v", {**FAST, "seed": i}, Limits())
        job, _ = store.create(
            "t2v", prepared.params, prepared.settings, ["mp4"], num_frames=prepared.num_frames
        )
        ids.append(job.id)
    return ids


def wait_done(store, ids: list[str], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(store.get(job_id).status == "done" for job_id in ids):
            return
        time.sleep(0.1)
    raise TimeoutError("jobs did not finish")


def throughput(url: str, model: Path, artifacts: Path, workers: int, jobs: int) -> float:
    """Jobs per minute once ``workers`` processes have loaded the model (one warm-up job each)."""
    from fusionframes.io.checkpoints import model_config_for
    from fusionframes.serve.pgstore import PostgresJobStore

    store = PostgresJobStore(url, artifacts)
    config = model_config_for(str(model))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "fusionframes.cli",
        "worker",
        "--store",
        url,
        "--artifacts",
        str(artifacts),
    ]
    command += ["--model", str(model), "--threads", "1"]
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        for _ in range(workers)
    ]
    try:
        wait_done(store, queue_jobs(store, config, workers * 2))  # every worker loaded and warm
        ids = queue_jobs(store, config, jobs)
        started = time.perf_counter()
        wait_done(store, ids)
        return jobs / ((time.perf_counter() - started) / 60)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="jobs per throughput run (default 30)")
    parser.add_argument("--overhead-jobs", type=int, default=200, help="jobs for the overhead runs")
    args = parser.parse_args()

    import torch
    from conftest import make_tiny_model

    from fusionframes.serve.jobs import JobStore
    from fusionframes.serve.pgstore import PostgresJobStore

    bindir = find_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL server binaries (apt-get install postgresql)")
    work = Path(tempfile.mkdtemp(prefix="ff-bench-"))
    postgres = PostgresServer(bindir).init().start()
    try:
        sqlite = JobStore(work / "sqlite")
        pg = PostgresJobStore(postgres.url, work / "pg-outputs")
        overhead = {
            "sqlite_ms_per_job": round(store_overhead(sqlite, args.overhead_jobs), 2),
            "postgresql_ms_per_job": round(store_overhead(pg, args.overhead_jobs), 2),
        }
        sqlite.close()
        pg.close()
        model = make_tiny_model(work / "tiny")
        rates = {
            f"{n}_workers_jobs_per_min": round(
                throughput(postgres.url, model, work / f"out{n}", n, args.jobs), 1
            )
            for n in (1, 2, 3)
        }
    finally:
        postgres.destroy()
    report = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "jobs_per_run": args.jobs,
        "job": "tiny model, t2v, 2 steps, 4 frames 64x64, mp4, 1 thread per worker",
        **overhead,
        **rates,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
