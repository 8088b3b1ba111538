"""From a request to a queued job, and from a job to its status: validation against the model (422
naming the field), the Idempotency-Key hash, the quota estimate, queue positions and ETAs. Both APIs
(``/api/jobs`` and ``/v1/videos``) queue through :func:`queue_job`."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from fusionframes.serve import store
from fusionframes.serve.context import Context
from fusionframes.serve.parameters import check_request
from fusionframes.serve.schemas import (
    JobRequest,
    JobResult,
    JobStatus,
    StageProgress,
)
from fusionframes.serve.store import DONE, QUEUED, RUNNING, Job
from fusionframes.serve.worker import field_of, prepare


def field_error(error: Exception, params: dict[str, Any] | None = None) -> HTTPException:
    """``ValueError("width: ...")`` -> 422 in FastAPI's own error shape, naming the field.

    A name that is not a request field is a key inside one (``"zoom: ..."`` from a ``motion``
    schedule dict): the location is then ``["body", "motion", "zoom"]``, never a made-up field.
    """
    loc = error_location(field_of(error), params or {})
    return HTTPException(422, detail=[{"loc": loc, "msg": str(error), "type": "value_error"}])


def error_location(name: str | None, params: dict[str, Any]) -> list[str]:
    if name is None:
        return ["body"]
    if name in JobRequest.model_fields:
        return ["body", name]
    for field_name, value in params.items():
        if isinstance(value, dict) and name in value:
            return ["body", field_name, name]
    return ["body"]


def request_hash(body: JobRequest) -> str:
    """What an ``Idempotency-Key`` is bound to: the request as sent (not the drawn seed)."""
    canonical = json.dumps(body.model_dump(exclude_none=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def expected_size(ctx: Context, prepared: Any, formats: list[str]) -> int:
    """The quota's estimate of a job's files (see :meth:`JobStore.expected_bytes`)."""
    settings = prepared.settings
    scenes = settings.get("scenes") or [{}]
    sampling = ctx.model_config.sampling
    width = settings.get("width") or scenes[0].get("width") or sampling.width
    height = settings.get("height") or scenes[0].get("height") or sampling.height
    return ctx.store.expected_bytes(prepared.num_frames, int(width), int(height), formats)


def eta_seconds(job: Job, ctx: Context, position: int | None, now: float) -> float | None:
    """Running: time so far scaled by the fraction done. Queued: recent mean run time times the
    rounds of work ahead of it."""
    fraction = (job.progress or {}).get("fraction", 0.0)
    if job.status == RUNNING and job.started:
        elapsed = now - job.started
        if fraction >= 0.01:
            return round(elapsed * (1 - fraction) / fraction, 1)
        mean = ctx.store.mean_duration()
        return round(max(0.0, mean - elapsed), 1) if mean else None
    if job.status == QUEUED and position is not None:
        mean = ctx.store.mean_duration()
        if mean is None:
            return None
        return round(mean * (math.ceil(position / max(1, ctx.config.workers)) + 0.5), 1)
    return None


def status_of(job: Job, ctx: Context) -> JobStatus:
    progress = job.progress or {}
    position = ctx.store.queue_position(job)
    fraction = 1.0 if job.status == DONE else float(progress.get("fraction", 0.0))
    primary = job.formats[-1] if job.formats else "mp4"
    return JobStatus(
        id=job.id,
        mode=job.mode,
        status=job.status,
        queue_position=position,
        stage=progress.get("stage"),
        stages=[StageProgress(**stage) for stage in progress.get("stages", [])],
        progress=min(1.0, max(0.0, fraction)),
        eta_seconds=eta_seconds(job, ctx, position, time.time()),
        created_at=job.created,
        started_at=job.started,
        finished_at=job.finished,
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        error=job.error,
        request={"mode": job.mode, "format": primary, **job.params},
        settings=job.settings,
        formats=job.formats,
        num_frames=job.num_frames,
        result=JobResult(**{k: v for k, v in job.result.items() if k in JobResult.model_fields})
        if job.result
        else None,
        video_url=f"/api/jobs/{job.id}/video" if job.status == DONE else None,
    )


def get_job(ctx: Context, job_id: str) -> Job:
    job = ctx.store.get(job_id)
    if job is None or (ctx.owner is not None and job.owner != ctx.owner):  # others' jobs do not exist
        raise HTTPException(404, detail=f"no job {job_id}")
    return job


def queue_job(body: JobRequest, ctx: Context, idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Validate a request against the model's config (422 naming the field) and queue it; returns
    ``(job, created)`` (False: the job this ``Idempotency-Key`` made before). Both APIs use it; the
    store's refusals (queue full, quota, a reused key) become answers in :func:`store_refusal`."""
    available, reason = ctx.modes.get(body.mode, (False, None))
    if not available:
        reason = reason or f"mode {body.mode!r} is not available in this install"
        raise field_error(ValueError(f"mode: {reason.split(' (')[0]}"))
    problem = ctx.store.writable()
    if problem is not None:
        raise problem
    params = body.model_dump(exclude_none=True, exclude={"mode", "format"})
    try:
        checked = check_request(body.mode, params, ctx.inputs, ctx.model_name, ctx.adapters)
        prepared = prepare(ctx.model_config, body.mode, checked.params, ctx.config.limits)
    except (ValueError, TypeError) as error:
        raise field_error(error, params) from None
    formats = ["mp4"] if body.format == "mp4" else ["mp4", body.format]
    initial = {
        "stage": None,
        "stages": [{"name": n, "step": 0, "total": max(1, t)} for n, t in prepared.stages],
    }
    job, created = ctx.store.create(
        body.mode,
        prepared.params,
        prepared.settings,
        formats,
        model=ctx.model_name,
        num_frames=prepared.num_frames,
        max_active=ctx.config.max_queue,
        quota_bytes=ctx.config.quota_bytes,
        idempotency_key=f"{ctx.owner}/{idempotency_key}"
        if ctx.owner and idempotency_key
        else idempotency_key,
        request_hash=request_hash(body),
        owner=ctx.owner,
        expected_bytes=expected_size(ctx, prepared, formats) if ctx.config.quota_bytes else 0,
        progress={**initial, "fraction": 0.0},
        image=checked.image,
    )
    ctx.pool.notify()
    return job, created


def change_job(ctx: Context, job_id: str, action: Callable[[str], Any], name: str = "job") -> Any:
    """Cancel or delete a job this request may see: ``action(job_id)`` on the store (404 when the job
    is gone meanwhile; a state that forbids it is a 409, see :func:`store_refusal`); a run here is
    told at once."""
    get_job(ctx, job_id)
    try:
        outcome = action(job_id)
    except KeyError:
        raise HTTPException(404, detail=f"no {name} {job_id}") from None
    ctx.pool.cancel(job_id)  # a no-op unless it runs in this process and is now to stop
    return outcome


async def store_refusal(request: Any, error: Exception) -> JSONResponse:
    """What the store refuses, as HTTP: a full queue 429 (retry soon), the quota 507, a state that
    forbids the change 409, an ``Idempotency-Key`` reused with another body 422 naming the header."""
    if isinstance(error, store.IdempotencyMismatch):
        detail = [{"loc": ["header", "idempotency-key"], "msg": str(error), "type": "value_error"}]
        return JSONResponse({"detail": detail}, 422)
    if isinstance(error, store.QueueFull):
        return JSONResponse({"detail": str(error)}, 429, headers={"Retry-After": "5"})
    return JSONResponse({"detail": str(error)}, 507 if isinstance(error, store.QuotaExceeded) else 409)


STORE_REFUSALS = (store.IdempotencyMismatch, store.QueueFull, store.QuotaExceeded, store.JobConflict)
