"""Where results live: a local (or shared) folder, or an S3-compatible bucket.

One small interface for the job stores, the workers and the download routes:

- ``target(job_id, fmt)``: the local path a worker renders a format to. A folder gives the final
  path (the video writer writes a hidden temporary file and renames it into place, so a file is
  complete or absent); a bucket gives a path in a local staging folder.
- ``publish(job_id, formats)``: makes the rendered files visible and returns their sizes. A folder
  has nothing left to do. A bucket uploads each file under a temporary key, copies it to its final
  key only once the upload is complete, and deletes the temporary key, so a reader never sees a
  partial object.
- ``local_path`` / ``stream``: a download (a folder is served as a file; a bucket streams from S3).
- ``remove(job_id)``: every file or object of the job, temporaries included.
- ``usage()``: bytes used, for the quota; ``probe()``: a real write, for the full-disk check.

Bucket access goes through boto3 (credentials and endpoint the usual way: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for S3-compatible servers, ...).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from fusionframes.serve.store import FORMATS, valid_job_id

SIDE = "json"  # the settings file the video writer puts beside each video
PROBE_BYTES = 64 * 1024
S3_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?$")


def check_name(job_id: str, fmt: str) -> None:
    if not valid_job_id(job_id) or fmt not in (*FORMATS, SIDE):
        raise ValueError(f"not a job file: {job_id!r}.{fmt!r}")


def write_probe(folder: Path) -> None:
    """Write, sync and remove 64 KiB in ``folder``; raises OSError (ENOSPC, ...) when it cannot."""
    path = folder / f".probe.tmp-{os.getpid()}"
    try:
        with open(path, "wb") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        path.unlink(missing_ok=True)


class LocalArtifacts:
    """``FOLDER/<id>.<fmt>``: today's behaviour; a shared folder (NFS, ...) serves many hosts."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.root = Path(folder).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __str__(self) -> str:
        return str(self.root)

    def target(self, job_id: str, fmt: str) -> Path:
        """The final path, refusing anything that would resolve outside the folder."""
        check_name(job_id, fmt)
        path = (self.root / f"{job_id}.{fmt}").resolve()
        if path.parent != self.root:
            raise ValueError(f"not a job file: {job_id!r}.{fmt!r}")
        return path

    local_path = target

    def publish(self, job_id: str, formats: list[str]) -> dict[str, int]:
        return {fmt: self.target(job_id, fmt).stat().st_size for fmt in formats}

    def exists(self, job_id: str, fmt: str) -> bool:
        return self.target(job_id, fmt).is_file()

    def stream(self, job_id: str, fmt: str) -> Iterator[bytes]:
        with open(self.target(job_id, fmt), "rb") as handle:
            while chunk := handle.read(1 << 16):
                yield chunk

    def remove(self, job_id: str) -> None:
        for fmt in (*FORMATS, SIDE):
            self.target(job_id, fmt).unlink(missing_ok=True)
        for entry in self.root.glob(f".{job_id}.*"):  # temporaries of an interrupted write
            entry.unlink(missing_ok=True)

    def clean_temporaries(self) -> int:
        """``write_video`` writes ``.<name>.tmp-*`` first; a crash can leave one behind."""
        count = 0
        for entry in self.root.iterdir():
            if entry.name.startswith(".") and ".tmp-" in entry.name and entry.is_file():
                entry.unlink(missing_ok=True)
                count += 1
        return count

    def usage(self) -> int:
        total = 0
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
        return total

    def probe(self) -> None:
        """Raises OSError (ENOSPC, ...) when 64 KiB cannot be written and synced."""
        write_probe(self.root)


class S3Artifacts:
    """``s3://BUCKET/PREFIX/<id>.<fmt>`` through boto3; renders are staged in a local folder."""

    def __init__(
        self, url: str, staging: str | os.PathLike[str] | None = None, client: object = None
    ) -> None:
        match = S3_URL.match(url)
        if match is None:
            raise ValueError(f"artifacts: {url!r} is not s3://BUCKET[/PREFIX]")
        self.url = url
        self.bucket = match.group(1)
        self.prefix = (match.group(2) or "").strip("/")
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client
        self.staging = Path(staging or tempfile.mkdtemp(prefix="fusionframes-staging-"))
        self.staging.mkdir(parents=True, exist_ok=True)
        self.client.head_bucket(Bucket=self.bucket)  # a missing bucket or bad credentials fail now

    def __str__(self) -> str:
        return self.url

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def target(self, job_id: str, fmt: str) -> Path:
        check_name(job_id, fmt)
        return self.staging / f"{job_id}.{fmt}"

    def local_path(self, job_id: str, fmt: str) -> None:
        return None  # downloads stream from the bucket

    def publish(self, job_id: str, formats: list[str]) -> dict[str, int]:
        """Upload under ``.tmp/<id>.<fmt>.<random>``, copy to the final key, delete the temporary."""
        sizes: dict[str, int] = {}
        try:
            for fmt in (*formats, SIDE):
                local = self.target(job_id, fmt)
                if not local.is_file():
                    continue
                size = local.stat().st_size
                temporary = self.key(f".tmp/{job_id}.{fmt}.{uuid.uuid4().hex[:12]}")
                self.client.upload_file(str(local), self.bucket, temporary)
                try:
                    self.client.copy_object(
                        Bucket=self.bucket,
                        Key=self.key(f"{job_id}.{fmt}"),
                        CopySource={"Bucket": self.bucket, "Key": temporary},
                    )
                finally:
                    self.client.delete_object(Bucket=self.bucket, Key=temporary)
                if fmt != SIDE:
                    sizes[fmt] = size
        finally:
            for fmt in (*FORMATS, SIDE):
                self.target(job_id, fmt).unlink(missing_ok=True)
        return sizes

    def exists(self, job_id: str, fmt: str) -> bool:
        check_name(job_id, fmt)
        found = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(f"{job_id}.{fmt}"), MaxKeys=1)
        return any(item["Key"] == self.key(f"{job_id}.{fmt}") for item in found.get("Contents", []))

    def stream(self, job_id: str, fmt: str) -> Iterator[bytes]:
        check_name(job_id, fmt)
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(f"{job_id}.{fmt}"))["Body"]
        try:
            yield from body.iter_chunks(1 << 16)
        finally:
            body.close()

    def _keys(self, prefix: str) -> Iterator[dict]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def remove(self, job_id: str) -> None:
        check_name(job_id, "mp4")
        keys = [item["Key"] for item in self._keys(self.key(f"{job_id}."))]
        keys += [item["Key"] for item in self._keys(self.key(f".tmp/{job_id}."))]
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": key} for key in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
        for fmt in (*FORMATS, SIDE):
            self.target(job_id, fmt).unlink(missing_ok=True)

    def clean_temporaries(self) -> int:
        """Local staging leftovers only: another host may be uploading under ``.tmp/`` right now."""
        count = 0
        for entry in self.staging.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)
                count += 1
            elif entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
        return count

    def usage(self) -> int:
        return sum(int(item["Size"]) for item in self._keys(self.key("") if self.prefix else ""))

    def probe(self) -> None:
        """The staging disk takes a file (renders are written there first)."""
        write_probe(self.staging)


Artifacts = LocalArtifacts | S3Artifacts


def open_artifacts(where: str | os.PathLike[str], staging: str | os.PathLike[str] | None = None) -> Artifacts:
    """``s3://bucket/prefix`` -> a bucket; anything else -> a folder."""
    text = str(where)
    if text.startswith("s3://"):
        try:
            return S3Artifacts(text, staging)
        except ImportError:
            raise ValueError("artifacts: s3:// needs boto3 (pip install boto3)") from None
    return LocalArtifacts(text)
