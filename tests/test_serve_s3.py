"""Results in an S3-compatible bucket: moto in server mode on a loopback port, a real PostgreSQL store,
one API process and one worker process with ``--artifacts s3://bucket/prefix``.

What must hold: a result is uploaded under a temporary key and appears at its final key only when
complete (no temporary key survives); downloads stream from the bucket, byte for byte; a deleted
job's objects are deleted; the bucket is the quota's measure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgserver import PostgresServer, find_bindir
from test_serve import FAST, free_port, wait_for
from test_serve_multihost import Api, Process

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[test]')")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")

BUCKET, PREFIX = "ff-results", "team/videos"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

pytestmark = pytest.mark.slow  # an S3 server and server processes


@pytest.fixture(scope="module")
def s3(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[str]:
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch_module.setenv(name, value)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


@pytest.fixture(scope="module")
def deployment(s3: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl); .ci/run installs Debian's postgresql")
    postgres = PostgresServer(bindir).init().start()
    root = tmp_path_factory.mktemp("s3")
    artifacts = f"s3://{BUCKET}/{PREFIX}"
    api = Api("api-s3", postgres.url, root / "unused", tiny_model_dir, root)
    api.args[api.args.index("--artifacts") + 1] = artifacts
    api.args += ["--quota-mb", "100"]
    worker = Process(
        "worker-s3",
        [
            "worker",
            "--store",
            postgres.url,
            "--artifacts",
            artifacts,
            "--model",
            str(tiny_model_dir),
            "--threads",
            "1",
        ],
        root,
    )
    try:
        api.start()
        worker.start()
        yield api.wait_ready()
    finally:
        api.stop()
        worker.stop()
        postgres.destroy()


def keys() -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_publish_uses_a_temporary_key_then_the_final_one(s3: str, tmp_path: Path) -> None:
    from fusionframes.serve.artifacts import S3Artifacts

    client = boto3.client("s3")
    calls: list[tuple[str, str]] = []

    class Recording:
        """The real client, with the order of writes recorded."""

        def __getattr__(self, name: str):
            method = getattr(client, name)
            if name in ("upload_file", "copy_object", "delete_object"):

                def record(*args, **kwargs):
                    key = kwargs.get("Key") or args[2]
                    calls.append((name, key))
                    return method(*args, **kwargs)

                return record
            return method

    store = S3Artifacts(f"s3://{BUCKET}/unit", tmp_path / "staging", client=Recording())
    job_id = "a" * 32
    store.target(job_id, "mp4").write_bytes(b"video bytes")
    store.target(job_id, "json").write_bytes(b"{}")
    assert store.publish(job_id, ["mp4"]) == {"mp4": 11}
    uploaded = [key for name, key in calls if name == "upload_file"]
    assert all("/.tmp/" in key for key in uploaded)  # never straight to the final key
    assert [name for name, _ in calls][:3] == ["upload_file", "copy_object", "delete_object"]
    assert b"".join(store.stream(job_id, "mp4")) == b"video bytes"
    assert [k for k in keys() if k.startswith("unit/")] == [f"unit/{job_id}.json", f"unit/{job_id}.mp4"]
    assert not list((tmp_path / "staging").iterdir())  # the staging copies are gone
    store.remove(job_id)
    assert not [k for k in keys() if k.startswith("unit/")]


def test_jobs_publish_to_the_bucket_and_delete_their_objects(deployment: Api) -> None:
    with deployment.client() as client:
        job = client.post("/api/jobs", json={"prompt": "a red circle", **FAST, "format": "gif"}).json()
        done = wait_for(client, job["id"], timeout=180)
        names = [k for k in keys() if job["id"] in k]
        assert names == [f"{PREFIX}/{job['id']}.{fmt}" for fmt in ("gif", "json", "mp4")]
        assert not [k for k in keys() if "/.tmp/" in k]
        body = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"{PREFIX}/{job['id']}.mp4")["Body"].read()
        download = client.get(f"/api/jobs/{job['id']}/video", params={"format": "mp4"})
        assert download.status_code == 200 and download.content == body
        assert download.headers["content-type"] == "video/mp4"
        assert done["result"]["files"]["mp4"] == len(body)
        v1 = client.get(f"/v1/videos/video_{job['id']}/content")
        assert v1.status_code == 200 and v1.content == body
        assert client.get("/api/health").json()["disk_used_bytes"] >= len(body)
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
        deadline = time.monotonic() + 10
        while [k for k in keys() if job["id"] in k]:
            assert time.monotonic() < deadline, keys()
            time.sleep(0.1)
