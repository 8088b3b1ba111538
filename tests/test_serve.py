"""Acceptance tests for ``fusionframes serve`` against real server processes on 127.0.0.1.

Each server is ``python -m fusionframes.serve.cli`` with the tiny random model (64x64, 4 keyframes),
2 denoising steps and one CPU thread per worker, so a job takes well under a second. Two servers:

- ``server``: token-protected, 2 workers (API, bad input, cancel, delete, load of 50 jobs); the last
  test SIGKILLs it mid-job and restarts it on the same data dir;
- ``limited``: no token, 1 worker, queue of 2, and the animation/movie pipelines hidden (modes that
  are "not available in this install");
- ``quota``: no token, 1 worker, a 0.1 MiB disk quota.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fusionframes.io.video import read_metadata, read_video

TOKEN = "test-token-0123456789abcdef"  # the main server's admin token
USERS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}  # its user tokens
FAST = {"num_inference_steps": 2, "fps": "low"}  # 4 frames of 64x64 at 1 fps
SLOW_STEPS = 300  # a job that runs long enough to be cancelled or killed mid-way
QUOTA_MB = 0.1  # about three FAST jobs by the server's first estimate (their MP4s are ~12 KB each)
READY_TIMEOUT = 120.0
# Tests on the module's server processes: their start (three servers, once per module) takes 30-70 s
# on a shared 2-core machine, so they are in the slow tier; the others stay in the fast one.
uses_server = pytest.mark.slow

# Makes `import fusionframes.pipelines.animation` / `.movie` fail in a server process, as in an install
# without those pipelines (sitecustomize runs at interpreter start-up).
HIDE_PIPELINES = """
import importlib.abc, sys

class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("fusionframes.pipelines.animation", "fusionframes.pipelines.movie"):
            raise ImportError(f"{name} hidden by the test")
        return None

sys.meta_path.insert(0, _Hide())
"""


# ---------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(extra_path: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FUSIONFRAMES_TOKEN"}
    env["OMP_NUM_THREADS"] = "1"
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    return env


class ServerProcess:
    """``python -m fusionframes.serve.cli`` in a subprocess, with a client for its API."""

    def __init__(
        self,
        model: Path,
        data_dir: Path,
        *options: str,
        token: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.model, self.data_dir, self.options, self.token = model, data_dir, options, token
        self.env = env or server_env()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"{data_dir.name}-server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        command = [sys.executable, "-m", "fusionframes.serve.cli", "--port", str(self.port)]
        command += ["--model", str(self.model), "--data-dir", str(self.data_dir), "--threads", "1"]
        command += list(self.options) + (["--token", self.token] if self.token else [])
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> ServerProcess:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    pytest.fail(
                        f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
                    )
                try:
                    if client.get("/api/health").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        pytest.fail(f"server not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0, **kwargs)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


def wait_for(
    client: httpx.Client, job_id: str, statuses: tuple[str, ...] = ("done",), timeout: float = 90.0
) -> dict:
    """Poll until the job reaches a final state; fail if it is not one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            assert job["status"] in statuses, job
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job_id} still {job['status']} after {timeout} s")


def wait_until_running(client: httpx.Client, job_id: str, min_step: int = 2, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] == "running" and job["stages"] and job["stages"][0]["step"] >= min_step:
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    pytest.fail(f"job {job_id} did not start")


def submit(client: httpx.Client, **body: Any) -> dict:
    response = client.post("/api/jobs", json={"prompt": "a red circle moving right", **FAST, **body})
    assert response.status_code == 201, response.text
    return response.json()


def raw_get(server: ServerProcess, path: str) -> tuple[int, bytes]:
    """A request whose path is sent exactly as written (httpx would normalise ``..``)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Authorization": f"Bearer {server.token}"} if server.token else {}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


@pytest.fixture(scope="module")
def servers(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServerProcess]]:
    """All server processes of this module, started together: their start-ups (imports, model load)
    overlap instead of adding up."""
    root = tmp_path_factory.mktemp("serve")
    (root / "users.txt").write_text("# name token\n" + "".join(f"{n} {t}\n" for n, t in USERS.items()))
    (root / "hide").mkdir()
    (root / "hide" / "sitecustomize.py").write_text(HIDE_PIPELINES)
    procs = {
        "main": ServerProcess(
            tiny_model_dir,
            root / "main",
            *("--workers", "2", "--max-queue", "200", "--max-frames", "500"),
            *("--user-tokens", str(root / "users.txt")),
            token=TOKEN,
        ),
        "limited": ServerProcess(
            tiny_model_dir,
            root / "limited",
            *("--max-queue", "2"),
            env=server_env(root / "hide"),
        ),
        "quota": ServerProcess(tiny_model_dir, root / "quota", "--quota-mb", str(QUOTA_MB)),
    }
    for proc in procs.values():
        proc.start()
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture(scope="module")
def server(servers: dict[str, ServerProcess]) -> ServerProcess:
    """Token-protected, 2 workers, at most 500 frames per job."""
    return servers["main"].wait_ready()


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def limited(servers: dict[str, ServerProcess]) -> ServerProcess:
    """No token, 1 worker, a queue of 2, and no animation/movie pipelines."""
    return servers["limited"].wait_ready()


@pytest.fixture(scope="module")
def quota(servers: dict[str, ServerProcess]) -> ServerProcess:
    """No token, 1 worker, a disk quota of QUOTA_MB."""
    return servers["quota"].wait_ready()


# ---------------------------------------------------------------------------------------------- start-up


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fusionframes.serve.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=server_env(),
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_refuses_network_host_without_token(host: str, tmp_path: Path) -> None:
    result = run_cli("--host", host, "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "token" in result.stderr and "refusing to start" in result.stderr
    assert not (tmp_path / "jobs.sqlite3").exists()


def test_refuses_short_token_on_network_host(tmp_path: Path) -> None:
    result = run_cli("--host", "0.0.0.0", "--token", "short", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "at least 16 characters" in result.stderr


def test_refuses_tokens_that_do_not_fit_in_a_url(tmp_path: Path) -> None:
    result = run_cli("--token", "has space;and=semicolon", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "letters, digits" in result.stderr


def test_add_serve_registers_the_subcommand() -> None:
    from fusionframes.cli import build_parser
    from fusionframes.cli.serve import run_serve

    argv = ["serve", "--port", "0", "--workers", "2", "--quota-mb", "5"]
    args = build_parser(argv).parse_args(argv)
    assert args.handler is run_serve
    assert (args.host, args.port, args.workers, args.quota_mb, args.max_queue) == (
        "127.0.0.1",
        0,
        2,
        5.0,
        100,
    )


@uses_server
def test_refuses_a_busy_data_dir(server: ServerProcess) -> None:
    result = run_cli(
        "--model", str(server.model), "--data-dir", str(server.data_dir), "--port", str(free_port())
    )
    assert result.returncode == 2
    assert "in use by another fusionframes server" in result.stderr


# ---------------------------------------------------------------------------------------------- job store


def test_store_requeues_running_jobs_in_order_and_gives_up_after_three_crashes(tmp_path: Path) -> None:
    from fusionframes.serve.jobs import JobStore

    store = JobStore(tmp_path)
    ids = [store.create("t2v", {"prompt": str(i)}, {}, ["mp4"])[0].id for i in range(3)]
    for attempt in (1, 2, 3):
        claimed = store.claim()
        assert (claimed.id, claimed.attempts) == (ids[0], attempt)  # the interrupted job goes first
        store.close()  # the server dies while the job runs
        store = JobStore(tmp_path)
        recovered = store.recover()
        assert (recovered["requeued"], recovered["failed"]) == ((1, 0) if attempt < 3 else (0, 1))
    assert store.get(ids[0]).status == "failed"
    assert [store.claim().id, store.claim().id, store.claim()] == [ids[1], ids[2], None]
    store.close()


def test_store_paths_stay_inside_outputs_and_one_server_per_dir(tmp_path: Path) -> None:
    from fusionframes.serve.jobs import DataDirBusy, JobStore

    store = JobStore(tmp_path)
    with pytest.raises(DataDirBusy):
        JobStore(tmp_path)
    good = "0" * 32
    assert store.output_path(good, "mp4") == tmp_path.resolve() / "outputs" / f"{good}.mp4"
    for job_id, fmt in (("../" + "0" * 29, "mp4"), ("A" * 32, "mp4"), (good, "../mp4"), (good, "sqlite3")):
        with pytest.raises(ValueError):
            store.output_path(job_id, fmt)
    assert store.get("../jobs") is None
    store.close()


# ---------------------------------------------------------------------------------------------- auth, schema


@uses_server
def test_token_guards_every_route(server: ServerProcess) -> None:
    job_path = f"/api/jobs/{'0' * 32}"
    paths = ["/", "/static/app.js", "/api/jobs", "/api/models", "/openapi.json", job_path, "/v1/videos"]
    with httpx.Client(base_url=server.url) as anonymous:
        for path in paths:
            response = anonymous.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.post("/api/jobs", json={"prompt": "x"}).status_code == 401
        assert anonymous.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert anonymous.get("/api/jobs", params={"token": TOKEN[:-1]}).status_code == 401
        assert anonymous.get("/api/health").status_code == 200  # the one open route (probes)
        page = anonymous.get("/", params={"token": TOKEN})  # the page: token in the query, then a cookie
        assert page.status_code == 200 and "<title>FusionFrames</title>" in page.text
        assert "HttpOnly" in page.headers["set-cookie"] and "SameSite=Strict" in page.headers["set-cookie"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert anonymous.get("/static/app.js").status_code == 200  # the cookie now authenticates
    with server.client() as client:
        assert client.get("/api/health").json()["auth"] is True


def user_client(server: ServerProcess, name: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {USERS[name]}"}, timeout=60)


@uses_server
def test_user_tokens_see_and_cancel_only_their_own_jobs(server: ServerProcess, api: httpx.Client) -> None:
    with user_client(server, "alice") as alice, user_client(server, "bob") as bob:
        mine = submit(alice, num_inference_steps=SLOW_STEPS)
        done = wait_for(alice, submit(alice)["id"])
        video = alice.post("/v1/videos", json={"prompt": "x", "num_inference_steps": 2, "fps": "low"}).json()
        for path in (f"/api/jobs/{mine['id']}", f"/api/jobs/{done['id']}/video", f"/v1/videos/{video['id']}"):
            assert bob.get(path).status_code == 404, path  # another user's job does not exist for bob
        assert bob.post(f"/api/jobs/{mine['id']}/cancel").status_code == 404
        assert bob.delete(f"/api/jobs/{done['id']}").status_code == 404
        assert bob.delete(f"/v1/videos/{video['id']}").status_code == 404
        listed = {job["id"] for job in bob.get("/api/jobs", params={"limit": 500}).json()["jobs"]}
        assert not listed & {mine["id"], done["id"]}
        assert not {v["id"] for v in bob.get("/v1/videos").json()["data"]} & {video["id"]}
        key = {"Idempotency-Key": "shared-key"}  # keys are per user: bob's does not return alice's job
        first = alice.post("/api/jobs", json={"prompt": "k", **FAST}, headers=key).json()
        other = bob.post("/api/jobs", json={"prompt": "k", **FAST}, headers=key)
        assert other.status_code == 201 and other.json()["id"] != first["id"]

        theirs = {job["id"] for job in alice.get("/api/jobs", params={"limit": 500}).json()["jobs"]}
        assert {mine["id"], done["id"]} <= theirs
        assert alice.get(f"/api/jobs/{done['id']}/video").status_code == 200
        admin = {job["id"] for job in api.get("/api/jobs", params={"limit": 500}).json()["jobs"]}
        assert theirs <= admin and other.json()["id"] in admin  # the admin token sees everyone's
        assert api.post(f"/api/jobs/{mine['id']}/cancel").status_code == 200  # and cancels them
        wait_for(alice, mine["id"], ("cancelled",))
        for job_id in (first["id"], other.json()["id"], video["id"].removeprefix("video_")):
            wait_for(api, job_id)


@uses_server
def test_openapi_schema_documents_the_api(api: httpx.Client) -> None:
    schema = api.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths["/api/jobs"]) == {"get", "post"}
    assert set(paths["/api/jobs/{job_id}"]) == {"get", "delete"}
    for path in ("events", "video", "cancel"):
        assert f"/api/jobs/{{job_id}}/{path}" in paths
    assert "/api/models" in paths and "/api/health" in paths
    request = schema["components"]["schemas"]["JobRequest"]["properties"]
    assert request["width"]["anyOf"][0]["maximum"] == 2048
    assert request["num_inference_steps"]["anyOf"][0]["minimum"] == 1
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


@uses_server
def test_health_and_models(api: httpx.Client) -> None:
    health = api.get("/api/health").json()
    assert health["status"] == "ok" and len(health["workers"]) == 2
    info = api.get("/api/models").json()
    assert info["current"]["pixel_multiple"] == 8 and info["current"]["num_keyframes"] == 4
    assert info["modes"]["t2v"]["available"] is True
    assert info["limits"]["max_frames"] == 500 and info["limits"]["max_queue"] == 200


# ---------------------------------------------------------------------------------------------- jobs


def read_events(client: httpx.Client, job_id: str) -> list[dict]:
    events, name = [], None
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name == "status":
                events.append(json.loads(line.removeprefix("data: ")))
    return events


@uses_server
def test_t2v_job_with_events_downloads_and_rerun(server: ServerProcess, api: httpx.Client) -> None:
    job = submit(api, format="gif", fps="medium", interpolation_steps=2, seed=7)
    assert job["status"] == "queued" and job["request"]["seed"] == 7
    assert [s["name"] for s in job["stages"]] == ["keyframes", "interpolation 1", "decoding"]

    events = read_events(api, job["id"])
    assert events[-1]["status"] == "done"
    fractions = [e["progress"] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {e["stage"] for e in events if e["stage"]} <= {"keyframes", "interpolation 1", "decoding"}
    assert all(stage["step"] == stage["total"] for stage in events[-1]["stages"])

    done = api.get(f"/api/jobs/{job['id']}").json()
    result = done["result"]
    assert result["num_frames"] == 13 and result["fps"] == 4.0 and result["duration"] == 13 / 4
    assert done["formats"] == ["mp4", "gif"] and done["eta_seconds"] is None

    gif = api.get(done["video_url"])  # the requested format by default
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
    mp4 = api.get(done["video_url"], params={"format": "mp4", "download": "1"})
    assert mp4.headers["content-type"] == "video/mp4"
    assert mp4.headers["content-disposition"].startswith("attachment")
    assert api.get(done["video_url"], params={"format": "webp"}).status_code == 404

    outputs = server.data_dir / "outputs"
    frames, fps = read_video(outputs / f"{job['id']}.mp4")
    assert frames.shape == (13, 64, 64, 3) and fps == pytest.approx(4.0)
    assert read_video(outputs / f"{job['id']}.gif")[0].shape[0] == 13
    assert read_metadata(outputs / f"{job['id']}.mp4")["seed"] == 7

    again = api.post("/api/jobs", json=done["request"])  # one-click re-run: same settings, same seed
    assert again.status_code == 201
    wait_for(api, again.json()["id"])
    assert np.array_equal(read_video(outputs / f"{again.json()['id']}.mp4")[0], frames)


@uses_server
def test_idempotency_key_makes_one_job(api: httpx.Client) -> None:
    body = {"prompt": "a blue square", **FAST}
    first = api.post("/api/jobs", json=body, headers={"Idempotency-Key": "retry-1"})
    second = api.post("/api/jobs", json=body, headers={"Idempotency-Key": "retry-1"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    wait_for(api, first.json()["id"])


@uses_server
def test_animate_and_movie_jobs(server: ServerProcess, api: httpx.Client) -> None:
    animate = submit(api, mode="animate", fps=4, seconds=1, motion="zoom_in", format="webp")
    movie = submit(
        api,
        mode="movie",
        prompt=None,
        scenes=["a red circle", "a blue square"],
        durations=[2, 3],
        transition="cut",
    )
    animated_movie = submit(
        api,
        mode="movie",
        prompt=None,
        scenes=["a red circle", "a blue square"],
        durations=[0.5, 0.5],
        scene_mode="animate",
        fps=4,
        motion=["pan_left", "zoom_in"],
        transition="continue",
    )
    assert movie["stages"][0]["name"] == "scene 1/2: text-to-video"
    assert animated_movie["settings"]["scenes"][1]["motion"] == "zoom_in"
    for job, frames in ((animate, 4), (movie, 5), (animated_movie, 4)):
        done = wait_for(api, job["id"])
        assert done["result"]["num_frames"] == frames
        decoded, _ = read_video(server.data_dir / "outputs" / f"{job['id']}.mp4")
        assert decoded.shape[0] == frames
    assert api.get(f"/api/jobs/{animate['id']}/video").headers["content-type"] == "image/webp"


@uses_server
def test_openai_style_video_routes(server: ServerProcess, api: httpx.Client) -> None:
    # the tiny model makes keyframes at 1 per second: 4 s -> 4 keyframes, 4 frames at fps "low"
    body = {"prompt": "a red circle moving right", "size": "64x64", "seconds": "4", "num_inference_steps": 2}
    created = api.post("/v1/videos", json={**body, "fps": "low", "seed": 4})
    assert created.status_code == 200, created.text
    video = created.json()
    assert video["object"] == "video" and video["status"] in ("queued", "in_progress")
    assert video["id"].startswith("video_") and video["model"] == "tiny-test"
    job_id = video["id"].removeprefix("video_")
    job = wait_for(api, job_id)  # the same job as /api/jobs sees it
    assert job["request"]["num_keyframes"] == 4 and job["request"]["seed"] == 4
    done = api.get(f"/v1/videos/{video['id']}").json()
    assert (done["status"], done["progress"], done["size"], done["seconds"]) == (
        "completed",
        100,
        "64x64",
        "4",
    )
    assert done["completed_at"] >= done["created_at"] and done["error"] is None
    content = api.get(f"/v1/videos/{video['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    assert content.content == (server.data_dir / "outputs" / f"{job_id}.mp4").read_bytes()
    assert video["id"] in [v["id"] for v in api.get("/v1/videos").json()["data"]]
    deleted = api.delete(f"/v1/videos/{video['id']}").json()
    assert deleted == {"id": video["id"], "object": "video.deleted", "deleted": True}
    assert api.get(f"/v1/videos/{video['id']}").status_code == 404

    for bad, field in (
        ({"size": "65x64"}, "width"),
        ({"model": "sora-2"}, "model"),
        ({"fps": "ultra"}, "fps"),
    ):
        response = api.post("/v1/videos", json={**body, **bad})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][:2] == ["body", field], response.json()
    slow = api.post(
        "/v1/videos", json={"prompt": "x", "num_inference_steps": SLOW_STEPS, "fps": "low"}
    ).json()
    wait_until_running(api, slow["id"].removeprefix("video_"))
    api.post(f"/api/jobs/{slow['id'].removeprefix('video_')}/cancel")
    wait_for(api, slow["id"].removeprefix("video_"), ("cancelled",))
    cancelled = api.get(f"/v1/videos/{slow['id']}").json()
    assert cancelled["status"] == "failed" and cancelled["error"]["code"] == "cancelled"
    assert api.get(f"/v1/videos/{slow['id']}/content").status_code == 409


# ---------------------------------------------------------------------------------------------- bad input

BAD_REQUESTS = [
    ({"prompt": "x", "width": 65}, "width", "multiple of 8"),
    ({"prompt": "x", "height": 4096}, "height", "less than or equal to 2048"),
    ({"prompt": "x", "width": 1088}, "width", "at most 1024"),
    ({"prompt": ""}, "prompt", "at least 1 character"),
    ({"fps": "low"}, "prompt", "non-empty"),
    ({"prompt": "x" * 2001}, "prompt", "at most 2000"),
    ({"prompt": "x", "fps": "ultra"}, "fps", "'low', 'medium' or 'high'"),
    ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps", "greater than or equal to 1"),
    ({"prompt": "x", "num_inference_steps": 10**6}, "num_inference_steps", "less than or equal to 500"),
    ({"prompt": "x", "guidance_scale": -1}, "guidance_scale", "greater than or equal to 0"),
    ({"prompt": "x", "seed": -5}, "seed", "greater than or equal to 0"),
    ({"prompt": "x", "scheduler": "euler"}, "scheduler", "allowed: ddpm"),
    ({"prompt": "x", "num_keyframes": 64, "fps": "high"}, "num_keyframes", "at most 500"),
    ({"prompt": "x", "mode": "sing"}, "mode", "'t2v', 'animate' or 'movie'"),
    ({"prompt": "x", "format": "avi"}, "format", "'mp4', 'gif' or 'webp'"),
    ({"prompt": "x", "image": "/etc/passwd"}, "image", "does not animate images"),  # never a path
    ({"prompt": "x", "motion": "zoom_in"}, "motion", "takes no motion level"),
    ({"prompt": "x", "mode": "animate", "motion": "spin"}, "motion", "unknown preset 'spin'"),
    ({"prompt": "x", "mode": "animate", "seconds": 600, "fps": 60}, "seconds", "at most 500"),
    ({"mode": "movie", "scenes": ["a", "b"], "durations": [1]}, "durations", "one per scene"),
    ({"mode": "movie", "scenes": ["a"] * 17}, "scenes", "at most 16"),
    ({"mode": "movie", "scenes": ["a"], "prompt": "b"}, "prompt", "one prompt per scene"),
]


@uses_server
@pytest.mark.parametrize(("body", "field", "reason"), BAD_REQUESTS, ids=[b[1] for b in BAD_REQUESTS])
def test_bad_input_is_422_naming_the_field(api: httpx.Client, body: dict, field: str, reason: str) -> None:
    response = api.post("/api/jobs", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["loc"][:2] == ["body", field] and reason in e["msg"] for e in errors), errors


@uses_server
def test_malformed_bodies_are_rejected(api: httpx.Client) -> None:
    nan = api.post(
        "/api/jobs",
        content='{"prompt": "x", "guidance_scale": NaN}',
        headers={"Content-Type": "application/json"},
    )
    assert nan.status_code == 422 and nan.json()["detail"][0]["loc"] == ["body", "guidance_scale"]
    assert (
        api.post("/api/jobs", content="{not json", headers={"Content-Type": "application/json"}).status_code
        == 422
    )
    assert (
        api.post("/api/jobs", content='{"prompt": "x"}', headers={"Content-Type": "text/plain"}).status_code
        == 422
    )
    huge = api.post("/api/jobs", json={"prompt": "x" * 100_000})
    assert huge.status_code == 413
    counts = api.get("/api/jobs").json()["counts"]
    assert counts["failed"] == 0


@uses_server
def test_cross_origin_writes_are_refused(api: httpx.Client, server: ServerProcess) -> None:
    response = api.post("/api/jobs", json={"prompt": "x", **FAST}, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    same = api.post("/api/jobs", json={"prompt": "x", **FAST}, headers={"Origin": server.url})
    assert same.status_code == 201
    wait_for(api, same.json()["id"])


TRAVERSALS = [
    "/api/jobs/../../jobs.sqlite3",
    "/api/jobs/../../../etc/passwd/video",
    "/api/jobs/%2e%2e/video",
    "/api/jobs/%2e%2e%2f%2e%2e%2fjobs.sqlite3/video",
    "/api/jobs/..%2F..%2Fjobs.sqlite3/video",
    "/api/jobs/%2E%2E%5Cjobs.sqlite3/video",
    "/api/jobs/" + "a" * 31 + "/video",
    "/api/jobs/" + "A" * 32 + "/video",
    "/api/jobs/" + "0" * 32 + "/video?format=../../jobs.sqlite3",
    "/api/jobs/" + "0" * 32 + "/video?format=json",
    "/static/../jobs.sqlite3",
    "/static/%2e%2e/%2e%2e/%2e%2e/jobs.sqlite3",
    "/static/..%2f..%2fserve%2fapp.py",
    "/outputs/",
    "/jobs.sqlite3",
]


@uses_server
def test_list_bounds_offset_and_limit(api: httpx.Client) -> None:
    for params in ({"offset": 2**63}, {"offset": 2**31}, {"offset": -1}, {"limit": 2**63}, {"limit": 0}):
        response = api.get("/api/jobs", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]
    far = api.get("/api/jobs", params={"offset": 2**31 - 1})
    assert far.status_code == 200 and far.json()["jobs"] == []


@uses_server
def test_405_lists_every_method_of_the_path(api: httpx.Client) -> None:
    for path, methods in (("/api/jobs", {"GET", "POST"}), (f"/api/jobs/{'0' * 32}", {"GET", "DELETE"})):
        response = api.put(path, json={})
        assert response.status_code == 405
        assert set(response.headers["allow"].replace(" ", "").split(",")) == methods


@uses_server
def test_schema_matches_behaviour(api: httpx.Client, limited: ServerProcess) -> None:
    from jsonschema import Draft202012Validator

    schema = api.get("/openapi.json").json()
    request = {"$defs": schema["components"]["schemas"], **schema["components"]["schemas"]["JobRequest"]}
    validator = Draft202012Validator(
        json.loads(json.dumps(request).replace("#/components/schemas/", "#/$defs/"))
    )
    assert not validator.is_valid({})  # 422 from the server, so invalid by the schema too
    assert api.post("/api/jobs", json={}).status_code == 422
    assert not validator.is_valid({"mode": "movie", "prompt": "x"})
    assert validator.is_valid({"prompt": "x"}) and validator.is_valid({"mode": "movie", "scenes": ["a"]})
    create = schema["paths"]["/api/jobs"]["post"]["responses"]
    not_utf8 = api.post(
        "/api/jobs", content=b'{"prompt": "\xff\xfe"}', headers={"Content-Type": "application/json"}
    )
    assert str(not_utf8.status_code) in create
    assert "401" in schema["paths"]["/api/jobs"]["get"]["responses"]  # token mode
    assert "401" not in schema["paths"]["/api/health"]["get"]["responses"]  # open to probes
    with limited.client() as client:
        open_schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in open_schema.get("components", {})
    assert all("security" not in op for ops in open_schema["paths"].values() for op in ops.values())
    assert "401" not in open_schema["paths"]["/api/jobs"]["get"]["responses"]


@uses_server
def test_docs_need_no_network(api: httpx.Client) -> None:
    """Swagger UI came from a CDN (a blank page offline): there is no /docs; the schema stays."""
    assert api.get("/docs").status_code == 404 and api.get("/redoc").status_code == 404
    assert api.get("/openapi.json").status_code == 200
    page = api.get("/").text + api.get("/static/app.js").text
    assert "cdn." not in page and "https://" not in page


@uses_server
def test_idempotency_key_with_another_body_is_422(api: httpx.Client) -> None:
    first = api.post("/api/jobs", json={"prompt": "one", **FAST}, headers={"Idempotency-Key": "reuse-1"})
    other = api.post("/api/jobs", json={"prompt": "two", **FAST}, headers={"Idempotency-Key": "reuse-1"})
    assert first.status_code == 201
    assert other.status_code == 422
    detail = other.json()["detail"][0]
    assert detail["loc"] == ["header", "idempotency-key"] and first.json()["id"] in detail["msg"]
    same = api.post("/api/jobs", json={"prompt": "one", **FAST}, headers={"Idempotency-Key": "reuse-1"})
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    wait_for(api, first.json()["id"])


@uses_server
def test_errors_inside_motion_schedules_name_motion(api: httpx.Client) -> None:
    body = '{"mode": "animate", "prompt": "x", "seconds": 1, "fps": 4, "motion": {"zoom": NaN}}'
    nan = api.post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
    assert nan.status_code == 422
    assert all(e["loc"][:2] == ["body", "motion"] for e in nan.json()["detail"]), nan.json()
    bad = api.post(
        "/api/jobs",
        json={"mode": "animate", "prompt": "x", "seconds": 1, "fps": 4, "motion": {"zoom": "0:(oops"}},
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] in (["body", "motion", "zoom"], ["body", "motion"]), bad.json()


@uses_server
@pytest.mark.parametrize("path", TRAVERSALS)
def test_downloads_never_leave_the_data_dir(server: ServerProcess, path: str) -> None:
    status, body = raw_get(server, path)
    assert status in (400, 404, 422), (status, body[:200])
    assert b"SQLite format" not in body and b"root:" not in body and b"import" not in body


@uses_server
def test_prompts_are_stored_verbatim_and_never_rendered_as_html(
    server: ServerProcess, api: httpx.Client
) -> None:
    prompt = '<img src=x onerror="alert(1)"> & <script>alert(2)</script>'
    job = submit(api, prompt=prompt)
    status = api.get(f"/api/jobs/{job['id']}")
    assert status.json()["request"]["prompt"] == prompt
    assert status.headers["content-type"] == "application/json"
    assert status.headers["x-content-type-options"] == "nosniff"
    script = api.get("/static/app.js").text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script
    assert "textContent" in script
    wait_for(api, job["id"])


# ------------------------------------------------------------------------------------------ cancel, delete


@uses_server
def test_cancel_stops_a_running_job_within_one_step(server: ServerProcess, api: httpx.Client) -> None:
    job = submit(api, num_inference_steps=SLOW_STEPS)
    wait_until_running(api, job["id"], min_step=2)
    response = api.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    at_cancel = response.json()["stages"][0]["step"]
    started = time.monotonic()
    stopped = wait_for(api, job["id"], ("cancelled",), timeout=10)
    assert time.monotonic() - started < 5
    assert stopped["stages"][0]["step"] <= at_cancel + 1 < SLOW_STEPS
    assert not list((server.data_dir / "outputs").glob(f"*{job['id']}*"))
    assert api.get(f"/api/jobs/{job['id']}/video").status_code == 409
    assert api.post(f"/api/jobs/{job['id']}/cancel").status_code == 409
    wait_for(api, submit(api)["id"])  # the worker is free again


@uses_server
def test_cancel_queued_job_and_delete_running_job(server: ServerProcess, api: httpx.Client) -> None:
    busy = [submit(api, num_inference_steps=SLOW_STEPS) for _ in range(2)]  # both workers
    queued = submit(api)
    for job in busy:
        wait_until_running(api, job["id"], min_step=1)
    assert api.get(f"/api/jobs/{queued['id']}").json()["queue_position"] == 1
    cancelled = api.post(f"/api/jobs/{queued['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    for job in busy:  # DELETE on a running job requests cancellation and answers at once
        started = time.monotonic()
        response = api.delete(f"/api/jobs/{job['id']}")
        assert response.status_code == 202 and "cancelling" in response.json()["detail"]
        assert time.monotonic() - started < 2
        assert api.get(f"/api/jobs/{job['id']}").status_code == 404  # gone for the API at once
        assert api.delete(f"/api/jobs/{job['id']}").status_code == 404
    for job in busy:  # ... and its row and files go when its worker stops it
        deadline = time.monotonic() + 10
        while server_has_row(server, job["id"]):
            assert time.monotonic() < deadline, "a deleted running job was not removed"
            time.sleep(0.05)
        assert not list((server.data_dir / "outputs").glob(f"*{job['id']}*"))
    assert api.delete(f"/api/jobs/{queued['id']}").status_code == 204


def server_has_row(server: ServerProcess, job_id: str) -> bool:
    import sqlite3

    with sqlite3.connect(f"file:{server.data_dir / 'jobs.sqlite3'}?mode=ro", uri=True) as db:
        return db.execute("SELECT COUNT(*) FROM jobs WHERE id=?", (job_id,)).fetchone()[0] == 1


@uses_server
def test_concurrent_deletes_of_a_running_job_never_block_the_server(
    server: ServerProcess, api: httpx.Client
) -> None:
    job = submit(api, num_inference_steps=SLOW_STEPS)
    wait_until_running(api, job["id"], min_step=1)

    def delete(_: int) -> tuple[int, float]:
        with server.client() as client:
            started = time.monotonic()
            return client.delete(f"/api/jobs/{job['id']}").status_code, time.monotonic() - started

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(delete, range(20)))
        started = time.monotonic()
        assert api.get("/api/health").status_code == 200
        assert time.monotonic() - started < 2
    assert {code for code, _ in answers} <= {202, 404}
    assert max(seconds for _, seconds in answers) < 5


@uses_server
def test_delete_removes_the_files(server: ServerProcess, api: httpx.Client) -> None:
    job = wait_for(api, submit(api, format="gif")["id"])
    files = sorted(p.name for p in (server.data_dir / "outputs").glob(f"{job['id']}.*"))
    assert files == [f"{job['id']}.gif", f"{job['id']}.json", f"{job['id']}.mp4"]
    assert api.delete(f"/api/jobs/{job['id']}").status_code == 204
    assert not list((server.data_dir / "outputs").glob(f"*{job['id']}*"))
    assert api.get(f"/api/jobs/{job['id']}").status_code == 404
    assert api.get(f"/api/jobs/{job['id']}/video").status_code == 404
    assert api.delete(f"/api/jobs/{job['id']}").status_code == 404


# ---------------------------------------------------------------------------------------------- load


@uses_server
def test_fifty_concurrent_jobs_all_finish_once(server: ServerProcess) -> None:
    prompts = [f"a red circle number {i}" for i in range(50)]
    barrier = threading.Barrier(50)

    def create(prompt: str) -> str:
        with server.client() as client:
            barrier.wait()
            response = client.post("/api/jobs", json={"prompt": prompt, **FAST})
            assert response.status_code == 201, response.text
            return response.json()["id"]

    with ThreadPoolExecutor(50) as pool:
        ids = list(pool.map(create, prompts))
    assert len(set(ids)) == 50
    with server.client() as client:
        jobs = [wait_for(client, job_id, timeout=240) for job_id in ids]
        listed = client.get("/api/jobs", params={"limit": 500}).json()["jobs"]
    assert [job["request"]["prompt"] for job in jobs] == prompts
    assert all(job["attempts"] == 1 for job in jobs)  # none ran twice
    listed_ids = [job["id"] for job in listed if job["id"] in set(ids)]
    assert sorted(listed_ids) == sorted(ids)  # each listed exactly once
    for job_id in ids:
        frames, _ = read_video(server.data_dir / "outputs" / f"{job_id}.mp4")
        assert frames.shape == (4, 64, 64, 3)


# ---------------------------------------------------------------------------------------------- limits


REBINDING_HOSTS = [
    "evil.example",
    "127.attacker.example",
    "127.0.0.1.attacker.example",
    "localhost.attacker.example",
    "127.0.0.1@evil.example",
    "127.0.0.1:80@evil.example",
    "::1",  # an IPv6 address only counts in brackets
    "[::1.evil.example]",
    "",
]
LOOPBACK_HOSTS = ["127.0.0.1", "LOCALHOST", "localhost", "127.0.0.2", "[::1]"]


@uses_server
def test_no_token_server_only_answers_localhost(limited: ServerProcess) -> None:
    with limited.client() as client:
        assert client.get("/api/health").json()["auth"] is False
        for host in REBINDING_HOSTS:
            for name in (host, f"{host}:{limited.port}") if host else (host,):
                assert client.get("/api/health", headers={"Host": name}).status_code == 421, name
        attack = client.post(  # the attack of the report: a rebinding page posting to itself
            "/api/jobs",
            json={"prompt": "x", "fps": "low"},
            headers={
                "Host": f"127.attacker.example:{limited.port}",
                "Origin": f"http://127.attacker.example:{limited.port}",
            },
        )
        assert attack.status_code == 421
        assert (
            client.get("/api/jobs", headers={"Host": f"127.attacker.example:{limited.port}"}).status_code
            == 421
        )
        for host in LOOPBACK_HOSTS:
            assert client.get("/api/health", headers={"Host": f"{host}:{limited.port}"}).status_code == 200


def test_loopback_host_parses_the_header() -> None:
    from fusionframes.serve.guard import loopback_host

    for host in REBINDING_HOSTS + ["127.1", "0x7f.0.0.1", "[::1]x", "localhost:", "localhost:99999999"]:
        assert not loopback_host(host), host
    for host in LOOPBACK_HOSTS + ["localhost:7860", "[::1]:7860", "127.255.0.1:1"]:
        assert loopback_host(host), host
    assert loopback_host("myhost.lan:7860", frozenset({"myhost.lan"}))  # the bound host


@uses_server
def test_unavailable_modes_are_422(limited: ServerProcess) -> None:
    with limited.client() as client:
        modes = client.get("/api/models").json()["modes"]
        assert modes["t2v"]["available"] and not modes["animate"]["available"]
        for mode, body in (("animate", {"prompt": "x"}), ("movie", {"scenes": ["x"]})):
            response = client.post("/api/jobs", json={"mode": mode, **body})
            assert response.status_code == 422
            detail = response.json()["detail"][0]
            assert detail["loc"] == ["body", "mode"]
            assert f"mode '{mode}' is not available in this install" in detail["msg"]


@uses_server
def test_full_queue_is_429(limited: ServerProcess) -> None:
    with limited.client() as client:
        running = submit(client, num_inference_steps=SLOW_STEPS)
        queued = submit(client)
        full = client.post("/api/jobs", json={"prompt": "x", **FAST})
        assert full.status_code == 429 and "queue is full" in full.json()["detail"]
        assert full.headers["retry-after"]
        for job in (queued, running):
            client.post(f"/api/jobs/{job['id']}/cancel")
            wait_for(client, job["id"], ("cancelled",))


@uses_server
def test_quota_counts_queued_jobs_and_is_never_overshot(quota: ServerProcess) -> None:
    """Ten jobs at zero usage: only those whose expected files fit are queued (507 for the rest);
    the outputs never end above the quota, and deleting frees room at once."""
    limit = QUOTA_MB * 2**20
    with quota.client() as client:
        answers = [client.post("/api/jobs", json={"prompt": f"x {i}", **FAST}) for i in range(10)]
        accepted = [a.json()["id"] for a in answers if a.status_code == 201]
        refused = [a for a in answers if a.status_code != 201]
        assert 1 <= len(accepted) < 10
        assert all(a.status_code == 507 and "disk quota exceeded" in a.json()["detail"] for a in refused)
        for job_id in accepted:
            wait_for(client, job_id)
        for _ in range(10):  # with real sizes learnt, fill the quota one job at a time
            answer = client.post("/api/jobs", json={"prompt": "y", **FAST})
            if answer.status_code == 507:
                break
            accepted.append(wait_for(client, answer.json()["id"])["id"])
        else:
            pytest.fail("the quota never filled")
        used = client.get("/api/health").json()["disk_used_bytes"]
        assert 0 < used <= limit
        assert client.delete(f"/api/jobs/{accepted[0]}").status_code == 204
        wait_for(client, submit(client)["id"])  # space freed: accepted again
        assert client.get("/api/health").json()["disk_used_bytes"] <= limit


# ---------------------------------------------------------------------------------------------- crash


@uses_server
def test_sigkill_mid_job_then_restart_finishes_it_in_order(servers: dict[str, ServerProcess]) -> None:
    """Runs last: kills the main server while both workers render, restarts it on the same data dir."""
    first = servers["main"].wait_ready()
    data = first.data_dir
    with first.client() as client:
        finished_before = client.get("/api/jobs", params={"status": "done", "limit": 500}).json()["total"]
        running = [submit(client, num_inference_steps=15, seed=11 + i) for i in range(2)]
        queued = [submit(client, prompt=f"a blue square {i}", seed=i) for i in range(4)]
        for job in running:
            wait_until_running(client, job["id"], min_step=3)
        assert all(client.get(f"/api/jobs/{j['id']}").json()["status"] == "queued" for j in queued)
    first.kill()
    stale = data / "outputs" / f".{running[0]['id']}.mp4.tmp-deadbeef.mp4"
    stale.write_bytes(b"half a video")  # what an interrupted write leaves behind

    second = ServerProcess(
        first.model, data, "--max-frames", "500", token=first.token
    )  # 1 worker: faster start
    servers["main"] = second  # stopped by the fixture
    second.start().wait_ready()
    with second.client() as client:
        jobs = [wait_for(client, job["id"]) for job in (*running, *queued)]
        done_now = client.get("/api/jobs", params={"status": "done", "limit": 500}).json()["total"]
    assert done_now == finished_before + len(jobs)  # earlier results are still listed
    assert [job["attempts"] for job in jobs] == [2, 2, 1, 1, 1, 1]
    starts = [job["started_at"] for job in jobs]
    assert starts == sorted(starts)  # the interrupted jobs first, then the queue in its original order
    assert not stale.exists()
    assert not [p for p in (data / "outputs").iterdir() if p.name.startswith(".")]
    for job in jobs:
        frames, fps = read_video(data / "outputs" / f"{job['id']}.mp4")
        assert frames.shape == (4, 64, 64, 3) and fps == pytest.approx(1.0)
        assert read_metadata(data / "outputs" / f"{job['id']}.mp4")["seed"] == job["request"]["seed"]
