"""The web app: a JSON API over the job queue, a server-sent-events progress stream, and one page.

Security model (see docs/serve.md): the server binds to localhost by default; an optional token guards
every route (``Authorization: Bearer``, a ``?token=`` query parameter, or the cookie the page gets when
opened with ``?token=``). Without a token only loopback ``Host`` headers are accepted (DNS rebinding),
cross-origin writes are refused, request bodies are small, and files are only ever served from the
data dir's ``outputs/`` folder by job id.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

import anyio
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from fusionframes import __version__
from fusionframes.serve.jobs import (
    DONE,
    FINAL,
    FORMATS,
    JOB_ID_PATTERN,
    MAX_OFFSET,
    QUEUED,
    RUNNING,
    IdempotencyMismatch,
    Job,
    JobConflict,
    JobStore,
    QueueFull,
    QuotaExceeded,
    StorageError,
    StoreBase,
)
from fusionframes.serve.worker import MODES, RUNNERS, Limits, WorkerPool, field_of, prepare

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_PROMPT = 2000
MAX_SCENES = 16
MAX_STEPS = 500
MAX_BODY_BYTES = 64 * 1024
COOKIE = "fusionframes_token"
LOOPBACK_NAMES = frozenset({"localhost"})
MEDIA_TYPES = {"mp4": "video/mp4", "gif": "image/gif", "webp": "image/webp"}
HEALTH_PATH = "/api/health"  # open without a token, for load balancers and probes
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SSE_POLL_S = 0.25
SSE_PING_S = 15.0
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


# ---------------------------------------------------------------------------------------------- config


@dataclass
class ServeConfig:
    """Everything ``fusionframes serve`` decides at start-up."""

    data_dir: Path
    host: str = "127.0.0.1"  # the bound address: also accepted as a Host header without a token
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    workers: int = 1
    threads: int | None = None  # CPU threads per worker (None: torch's default)
    token: str | None = None  # the admin token: every job
    users: dict[str, str] = field(default_factory=dict)  # user token -> name: their own jobs only
    max_queue: int = 100
    quota_bytes: int | None = None
    limits: Limits = field(default_factory=Limits)


@dataclass
class Context:
    """What the routes share: the settings, the store, the workers and the model's config."""

    config: ServeConfig
    model_config: Any
    store: StoreBase
    pool: WorkerPool
    modes: dict[str, tuple[bool, str | None]]
    model_name: str = "builtin"
    owner: str | None = None  # per request: the user whose token it carries (None: admin, no tokens)


def context(request: Request) -> Context:
    """The shared context, bound to the user the request's token names (jobs are theirs only)."""
    shared: Context = request.app.state.context
    owner = request.scope.get("state", {}).get("owner")
    return replace(shared, owner=owner) if owner is not None else shared


Ctx = Annotated[Context, Depends(context)]
JobId = Annotated[
    str, PathParam(pattern=JOB_ID_PATTERN, description="job id: 32 lowercase hex digits", examples=["0" * 32])
]


# ---------------------------------------------------------------------------------------------- schemas

Prompt = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PROMPT)]
FpsNumber = Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)]
Scale = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class JobRequest(BaseModel):
    """A generation request. Unset options take the model's defaults; the seed is drawn and recorded."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,  # as the schema says: no `false` for a number, no "5" for an integer
        json_schema_extra={
            # What the validator checks beyond the fields: t2v and animate need a prompt, a movie
            # needs mode "movie" and its scenes (so `{}` is invalid by the schema too).
            "anyOf": [
                {
                    "required": ["prompt"],
                    "properties": {"mode": {"enum": ["t2v", "animate"]}, "prompt": {"type": "string"}},
                    "not": {"required": ["scenes"]},
                },
                {
                    "required": ["mode", "scenes"],
                    "properties": {"mode": {"const": "movie"}, "scenes": {"type": "array"}},
                    "not": {"required": ["prompt"]},
                },
            ],
            "examples": [
                {"mode": "t2v", "prompt": "a red circle moving right", "fps": "low", "seed": 1},
                {
                    "mode": "animate",
                    "prompt": "a forest at dawn",
                    "motion": "zoom_in",
                    "seconds": 2,
                    "fps": 8,
                },
                {"mode": "movie", "scenes": ["a red circle", "a blue square"], "durations": [4, 4]},
            ],
        },
    )

    mode: Literal["t2v", "animate", "movie"] = Field("t2v", description="t2v | animate | movie")
    prompt: Prompt | None = Field(None, description="what the video shows (t2v and animate)")
    negative_prompt: Annotated[str, StringConstraints(max_length=MAX_PROMPT)] | None = Field(
        None, description="what to avoid"
    )
    width: int | None = Field(None, ge=64, le=2048, description="pixels; a multiple of the model's size step")
    height: int | None = Field(
        None, ge=64, le=2048, description="pixels; a multiple of the model's size step"
    )
    fps: Literal["low", "medium", "high"] | FpsNumber | None = Field(
        None, description="t2v and t2v movies: low | medium | high; animate: frames per second"
    )
    num_inference_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="denoising steps")
    guidance_scale: Scale | None = Field(None, description="classifier-free guidance weight")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="random seed (default: drawn, recorded)")
    format: Literal["mp4", "gif", "webp"] = Field(
        "mp4", description="download format; an MP4 is always made for the player"
    )
    interpolation_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="t2v: steps per interpolation"
    )
    interpolation_guidance_scale: Scale | None = Field(None, description="t2v: interpolation guidance")
    num_keyframes: int | None = Field(None, ge=2, le=64, description="t2v: keyframes (default: the model's)")
    scheduler: Short | None = Field(None, description="t2v: sampler (default: the model's)")
    seconds: Seconds | None = Field(None, description="animate: length in seconds")
    motion: (
        Short
        | dict[Short, Short | Annotated[float, Field(allow_inf_nan=False)]]
        | Annotated[list[Short], Field(max_length=MAX_SCENES)]
        | None
    ) = Field(
        None,
        description="animate: camera preset ('zoom_in', 'pan_left+zoom_in') or custom schedules "
        "{'zoom': '0:(1.02)'}; movie: one of those, or a list with one preset per scene",
    )
    strength: (
        Annotated[float, Field(ge=0, le=1)] | Annotated[str, StringConstraints(max_length=MAX_PROMPT)] | None
    ) = Field(None, description="animate: redraw strength 0..1 or a schedule '0:(0.6), 48:(0.4)'")
    cadence: int | None = Field(None, ge=1, le=64, description="animate: redraw every K-th frame")
    border: Short | None = Field(None, description="animate: reflect | replicate | wrap | zeros")
    colour_coherence: Short | None = Field(None, description="animate: lab | hsv | rgb | none")
    noise: Annotated[float, Field(ge=0, le=1)] | None = Field(None, description="animate: grain per redraw")
    scenes: list[Prompt] | None = Field(
        None, min_length=1, max_length=MAX_SCENES, description="movie: one prompt per scene"
    )
    durations: list[Seconds] | None = Field(
        None, min_length=1, max_length=MAX_SCENES, description="movie: seconds per scene (default 4 each)"
    )
    scene_mode: Literal["t2v", "animate"] | None = Field(None, description="movie: how scenes are made")
    transition: Literal["cut", "crossfade", "continue"] | None = Field(None, description="movie: scene joins")
    crossfade_frames: int | None = Field(None, ge=1, le=1000, description="movie: frames per crossfade")


class StageProgress(BaseModel):
    name: str
    step: int
    total: int


class JobResult(BaseModel):
    num_frames: int
    fps: float
    duration: float = Field(description="seconds: num_frames / fps")
    width: int
    height: int
    files: dict[str, int] = Field(description="format -> size in bytes")


class JobStatus(BaseModel):
    id: str
    mode: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    queue_position: int | None = Field(description="1 = next to run; only while queued")
    stage: str | None
    stages: list[StageProgress]
    progress: float = Field(ge=0, le=1, description="fraction of all denoising steps done")
    eta_seconds: float | None = Field(description="estimated seconds until done")
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int = Field(description="times a worker started it (a crash re-queues it)")
    cancel_requested: bool
    error: str | None
    request: dict[str, Any] = Field(description="the request that re-makes this job (seed included)")
    settings: dict[str, Any] = Field(description="every resolved generation setting")
    formats: list[str]
    num_frames: int | None
    result: JobResult | None
    video_url: str | None


class JobList(BaseModel):
    jobs: list[JobStatus]
    total: int
    counts: dict[str, int]


class WorkerInfo(BaseModel):
    index: int
    state: str
    job: str | None
    error: str | None


class Health(BaseModel):
    status: Literal["ok", "loading", "error"]
    version: str
    model: str
    workers: list[WorkerInfo]
    jobs: dict[str, int]
    disk_used_bytes: int
    disk_quota_bytes: int | None
    max_queue: int
    auth: bool
    error: str | None = Field(None, description="why the server cannot run jobs now")


class ModeInfo(BaseModel):
    available: bool
    reason: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ModelsInfo(BaseModel):
    current: dict[str, Any]
    models: list[dict[str, Any]]
    modes: dict[str, ModeInfo]
    limits: dict[str, Any]
    formats: list[str]


class ErrorDetail(BaseModel):
    detail: str


# ---------------------------------------------------------------------------------------------- helpers


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


async def storage_error(request: Request, error: Exception) -> JSONResponse:
    """The data dir cannot be written: 507 when the disk is full, else 503; never a bare 500."""
    full = isinstance(error, StorageError) and error.full
    return JSONResponse({"detail": f"{error}; try again later"}, 507 if full else 503)


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's handler, except that a 405 lists every method the path has in ``Allow`` (the
    router stops at the first route that matches the path, so it would name one method)."""
    assert isinstance(error, StarletteHTTPException)
    headers = dict(error.headers or {})
    if error.status_code == 405:
        routes = request.app.router.routes
        methods = [
            method
            for method in HTTP_METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
        ]
        if methods:
            headers["Allow"] = ", ".join(methods)
    if error.status_code in (204, 304):
        return Response(status_code=error.status_code, headers=headers)
    return JSONResponse({"detail": error.detail}, error.status_code, headers=headers)


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 shape without echoing the input back (it may be huge, or NaN, which JSON lacks)."""
    errors = error.errors() if isinstance(error, RequestValidationError) else []
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors
    ]
    return JSONResponse({"detail": detail}, 422)


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
    ``(job, created)`` (False: the job this ``Idempotency-Key`` made before). Both APIs use it."""
    if not ctx.modes.get(body.mode, (False, None))[0]:
        raise field_error(ValueError(f"mode: mode {body.mode!r} is not available in this install"))
    problem = ctx.store.writable()
    if problem is not None:
        raise problem
    params = body.model_dump(exclude_none=True, exclude={"mode", "format"})
    try:
        prepared = prepare(ctx.model_config, body.mode, params, ctx.config.limits)
    except (ValueError, TypeError) as error:
        raise field_error(error, params) from None
    formats = ["mp4"] if body.format == "mp4" else ["mp4", body.format]
    initial = {
        "stage": None,
        "stages": [{"name": n, "step": 0, "total": max(1, t)} for n, t in prepared.stages],
    }
    try:
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
        )
    except IdempotencyMismatch as error:
        detail = [{"loc": ["header", "idempotency-key"], "msg": str(error), "type": "value_error"}]
        raise HTTPException(422, detail=detail) from None
    except QueueFull as error:
        raise HTTPException(429, detail=str(error), headers={"Retry-After": "5"}) from None
    except QuotaExceeded as error:
        raise HTTPException(507, detail=str(error)) from None
    ctx.pool.notify()
    return job, created


# ---------------------------------------------------------------------------------------------- routes

bearer = HTTPBearer(auto_error=False, description="the server's --token (or ?token= for the page/videos)")
api = APIRouter(prefix="/api", dependencies=[Security(bearer)])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "missing or wrong token"},
    404: {"model": ErrorDetail, "description": "no such job"},
}


@api.post(
    "/jobs",
    status_code=201,
    response_model=JobStatus,
    summary="Queue a t2v, animate or movie job",
    responses={
        200: {"model": JobStatus, "description": "the job already created with this Idempotency-Key"},
        401: ERRORS[401],
        429: {"model": ErrorDetail, "description": "queue full"},
        507: {"model": ErrorDetail, "description": "disk quota exceeded"},
    },
)
def create_job(
    body: JobRequest,
    ctx: Ctx,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobStatus:
    """Validate against the model's config (422 naming the field), then queue."""
    job, created = queue_job(body, ctx, idempotency_key)
    if not created:
        response.status_code = 200
    return status_of(job, ctx)


@api.get("/jobs", response_model=JobList, summary="List jobs, newest first", responses={401: ERRORS[401]})
def list_jobs(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status: Literal["queued", "running", "done", "failed", "cancelled"] | None = None,
) -> JobList:
    jobs, total = ctx.store.list_jobs(limit, offset, status, owner=ctx.owner)
    return JobList(
        jobs=[status_of(job, ctx) for job in jobs], total=total, counts=ctx.store.counts(ctx.owner)
    )


@api.get("/jobs/{job_id}", response_model=JobStatus, summary="Job status and progress", responses=ERRORS)
def job_status(job_id: JobId, ctx: Ctx) -> JobStatus:
    return status_of(get_job(ctx, job_id), ctx)


@api.get(
    "/jobs/{job_id}/events",
    summary="Progress as server-sent events",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {"content": {"text/event-stream": {}}, "description": "`event: status` frames"},
    },
)
async def job_events(job_id: JobId, ctx: Ctx, request: Request) -> StreamingResponse:
    """One ``status`` event (the JobStatus JSON) per change; the stream ends when the job does."""
    await anyio.to_thread.run_sync(get_job, ctx, job_id)
    return StreamingResponse(
        event_stream(job_id, ctx, request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _snapshot(job_id: str, ctx: Context) -> JobStatus | None:
    job = ctx.store.get(job_id)
    return status_of(job, ctx) if job else None


async def event_stream(
    job_id: str, ctx: Context, disconnected: Callable[[], Awaitable[bool]]
) -> AsyncIterator[str]:
    last_key, last_sent = None, time.monotonic()
    yield "retry: 2000\n\n"
    while not await disconnected():
        status = await anyio.to_thread.run_sync(_snapshot, job_id, ctx)
        if status is None:
            yield 'event: deleted\ndata: {"status": "deleted"}\n\n'
            return
        key = (
            status.status,
            status.stage,
            status.queue_position,
            tuple((s.name, s.step) for s in status.stages),
        )
        if key != last_key:
            yield f"event: status\ndata: {status.model_dump_json()}\n\n"
            last_key, last_sent = key, time.monotonic()
        elif time.monotonic() - last_sent > SSE_PING_S:
            yield ": ping\n\n"
            last_sent = time.monotonic()
        if status.status in FINAL:
            return
        await asyncio.sleep(SSE_POLL_S)


@api.get(
    "/jobs/{job_id}/video",
    summary="Download the video (MP4, GIF or WebP)",
    response_class=FileResponse,
    responses={
        **ERRORS,
        200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "the video file"},
        409: {"model": ErrorDetail, "description": "not finished"},
    },
)
def job_video(
    job_id: JobId,
    ctx: Ctx,
    format: Annotated[
        Literal["mp4", "gif", "webp"] | None, Query(description="default: the requested one")
    ] = None,
    download: Annotated[bool, Query(description="send as an attachment")] = False,
) -> Response:
    job = get_job(ctx, job_id)
    if job.status != DONE:
        raise HTTPException(409, detail=f"job {job_id} is {job.status}; its video exists once it is done")
    fmt = format or job.formats[-1]
    if fmt not in job.formats:
        raise HTTPException(404, detail=f"job {job_id} was made as {', '.join(job.formats)}, not {fmt}")
    return download_response(
        ctx,
        job.id,
        fmt,
        f"fusionframes-{job.id[:8]}.{fmt}",
        "attachment" if download else "inline",
    )


def download_response(ctx: Context, job_id: str, fmt: str, filename: str, disposition: str) -> Response:
    """A result as a file (a folder) or streamed from its bucket; 404 when it is missing."""
    artifacts = ctx.store.artifacts
    if not artifacts.exists(job_id, fmt):
        raise HTTPException(404, detail=f"the {fmt} file of job {job_id} is missing from the results")
    headers = {"Cache-Control": "private, max-age=3600"}
    path = artifacts.local_path(job_id, fmt)
    if path is not None:
        return FileResponse(
            path,
            media_type=MEDIA_TYPES[fmt],
            filename=filename,
            content_disposition_type=disposition,
            headers=headers,
        )
    headers["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    return StreamingResponse(artifacts.stream(job_id, fmt), media_type=MEDIA_TYPES[fmt], headers=headers)


@api.post(
    "/jobs/{job_id}/cancel",
    response_model=JobStatus,
    summary="Cancel a queued or running job",
    responses={**ERRORS, 409: {"model": ErrorDetail, "description": "already finished"}},
)
def cancel_job(job_id: JobId, ctx: Ctx) -> JobStatus:
    """A running job stops within one denoising step; poll or watch events for ``cancelled``."""
    get_job(ctx, job_id)
    try:
        job = ctx.store.request_cancel(job_id)
    except KeyError:
        raise HTTPException(404, detail=f"no job {job_id}") from None
    except JobConflict as error:
        raise HTTPException(409, detail=str(error)) from None
    ctx.pool.cancel(job_id)
    return status_of(job, ctx)


@api.delete(
    "/jobs/{job_id}",
    status_code=204,
    summary="Delete a job and its files (a running one is cancelled and goes within a step)",
    responses={
        **ERRORS,
        202: {
            "model": ErrorDetail,
            "description": "the job runs: cancellation requested; it and its files go when it stops",
        },
    },
)
def delete_job(job_id: JobId, ctx: Ctx) -> Response:
    """Never waits on a worker: a running job is flagged and answered with 202 at once."""
    get_job(ctx, job_id)
    try:
        gone = ctx.store.delete(job_id)
    except KeyError:
        raise HTTPException(404, detail=f"no job {job_id}") from None
    if gone:
        return Response(status_code=204)
    ctx.pool.cancel(job_id)
    return JSONResponse(
        {"detail": f"job {job_id} is running: cancelling it; it is deleted when it stops"}, 202
    )


@api.get("/models", response_model=ModelsInfo, summary="The model served, modes and limits", responses=ERRORS)
def models(ctx: Ctx) -> ModelsInfo:
    from fusionframes.io.checkpoints import list_models

    config = ctx.model_config
    current = {
        "name": ctx.model_name,
        "source": str(ctx.config.model or "builtin"),
        "pixel_multiple": config.pixel_multiple,
        "num_keyframes": config.keyframe_unet.num_frames,
        "defaults": asdict(config.sampling),
    }
    return ModelsInfo(
        current=current,
        models=[{k: v for k, v in row.items() if k != "vocabulary"} for row in list_models()],
        modes={mode: mode_info(mode, ctx) for mode in MODES},
        limits={
            **asdict(ctx.config.limits),
            "max_queue": ctx.config.max_queue,
            "max_steps": MAX_STEPS,
            "max_prompt": MAX_PROMPT,
            "max_scenes": MAX_SCENES,
            "quota_bytes": ctx.config.quota_bytes,
        },
        formats=list(FORMATS),
    )


def mode_info(mode: str, ctx: Context) -> ModeInfo:
    available, reason = ctx.modes[mode]
    options: dict[str, Any] = {}
    if mode == "t2v":
        options = {"fps": ["low", "medium", "high"]}
    elif available:
        from fusionframes.camera import BORDER_MODES, PRESET_NAMES

        options = {"motion_presets": list(PRESET_NAMES), "borders": list(BORDER_MODES)}
        if mode == "movie":
            options |= {"transitions": ["cut", "crossfade", "continue"], "scene_modes": ["t2v", "animate"]}
    return ModeInfo(available=available, reason=reason, options=options)


@api.get(
    "/health",
    response_model=Health,
    summary="Readiness: 200 once a worker has loaded the model and the data dir takes writes",
    responses={503: {"model": Health, "description": "loading, or not able to run jobs (see `error`)"}},
)
def health(ctx: Ctx, response: Response) -> Health:
    states = ctx.pool.states
    problem = ctx.store.writable()
    error = None
    if problem is not None:
        status, error = "error", f"{problem}; new jobs are refused until the data dir takes writes again"
    elif ctx.pool.ready or ctx.config.workers == 0:  # an API-only replica: workers run elsewhere
        status = "ok"
    elif all(s.state == "error" for s in states):
        status, error = "error", "no worker could load the model"
    else:
        status = "loading"
    if status != "ok":
        response.status_code = 503
    return Health(
        status=status,
        version=__version__,
        model=ctx.model_name,
        workers=[WorkerInfo(index=s.index, state=s.state, job=s.job, error=s.error) for s in states],
        jobs=ctx.store.counts(),
        disk_used_bytes=ctx.store.disk_usage(),
        disk_quota_bytes=ctx.config.quota_bytes,
        max_queue=ctx.config.max_queue,
        auth=ctx.config.token is not None or bool(ctx.config.users),
        error=error,
    )


# ---------------------------------------------------------------------------------------------- guard


class Guard:
    """ASGI middleware in front of everything: token, Host and Origin checks, body size, headers."""

    def __init__(
        self, app: Any, token: str | None, hosts: tuple[str, ...] = (), users: dict[str, str] | None = None
    ) -> None:
        self.app = app
        # secret -> the owner its jobs get: None for the admin token (--token), a name for a user's
        self.tokens: dict[str, str | None] = {secret: name for secret, name in (users or {}).items()}
        if token is not None:
            self.tokens[token] = None
        self.protected = bool(self.tokens)
        self.hosts = frozenset(host.lower().strip("[]") for host in hosts)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self.refuse(scope, headers)
        if problem is not None:
            await problem(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        credential = self.credential(scope, headers)
        if self.protected:
            scope.setdefault("state", {})["owner"] = self.tokens.get(credential) if credential else None
        cookie = self.match(query.get("token", [None])[0])
        await self.app(scope, receive, self._with_headers(send, scope["path"], cookie))

    def refuse(self, scope: dict, headers: dict[str, str]) -> JSONResponse | None:
        if not self.protected and not loopback_host(headers.get("host", ""), self.hosts):
            return JSONResponse({"detail": "Host not allowed: without a token only localhost is served"}, 421)
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and not same_origin(headers):
            return JSONResponse({"detail": "cross-origin request refused"}, 403)
        length = headers.get("content-length")
        if "transfer-encoding" in headers and length is None:
            return JSONResponse({"detail": "Content-Length required (no chunked bodies)"}, 411)
        if length is not None:
            if not length.isdigit():
                return JSONResponse({"detail": "bad Content-Length"}, 400)
            if int(length) > MAX_BODY_BYTES:
                return JSONResponse({"detail": f"request body larger than {MAX_BODY_BYTES} bytes"}, 413)
        open_route = scope["path"] == HEALTH_PATH and scope["method"] in ("GET", "HEAD")
        if self.protected and not open_route and self.credential(scope, headers) is None:
            return JSONResponse(
                {"detail": "missing or wrong token: send 'Authorization: Bearer <token>' or ?token=<token>"},
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    def match(self, given: str | None) -> str | None:
        """The configured token equal to ``given`` (compared in constant time), or None."""
        if given is None:
            return None
        found = None
        for secret in self.tokens:
            if secrets.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode("utf-8")):
                found = secret
        return found

    def credential(self, scope: dict, headers: dict[str, str]) -> str | None:
        """The token this request carries (header, ``?token=`` or the page's cookie), if valid."""
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and (found := self.match(credentials.strip())):
            return found
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if found := self.match(query.get("token", [None])[0]):
            return found
        return self.match(cookie_value(headers.get("cookie", ""), COOKIE))

    def _with_headers(self, send: Callable, path: str, cookie_token: str | None) -> Callable:
        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if path == "/" or path.startswith("/static/"):
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                if path.startswith("/api/") and not path.endswith("/video"):
                    extra.append((b"cache-control", b"no-store"))
                if cookie_token is not None:
                    cookie = f"{COOKIE}={cookie_token}; HttpOnly; SameSite=Strict; Path=/"
                    extra.append((b"set-cookie", cookie.encode("utf-8")))
                names = {name for name, _ in extra}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + extra}
            await send(message)

        return wrapped


def host_name(header: str) -> str | None:
    """The host of a ``Host`` header (``name``, ``name:port``, ``[v6]`` or ``[v6]:port``), lower
    case; None when the header is not of that form."""
    if header.startswith("["):
        end = header.find("]")
        name, rest = header[1:end], header[end + 1 :]
        if end < 0 or not name:
            return None
    else:
        name, colon, port = header.partition(":")
        rest = colon + port
        if not name:
            return None
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return None
    return name.lower()


def loopback_host(header: str, bound: frozenset[str] = frozenset()) -> bool:
    """``localhost:7860`` / ``127.0.0.1`` / ``[::1]:7860`` / the bound host -> True.

    Parsed, never prefix-matched: ``127.attacker.example`` is a DNS name an attacker controls
    (DNS rebinding), not a loopback address. An IPv6 address counts only in brackets.
    """
    name = host_name(header)
    if name is None:
        return False
    if name in LOOPBACK_NAMES or name in bound:
        return True
    bracketed = header.startswith("[")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback and (address.version == 6) == bracketed


def same_origin(headers: dict[str, str]) -> bool:
    """Browsers send Origin on cross-site writes; tools (curl) send none and are allowed."""
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def cookie_value(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


# ---------------------------------------------------------------------------------------------- the app


def model_label(model: str | None) -> str:
    """The name a model folder gives itself (its manifest), else what was passed to ``--model``."""
    from fusionframes.io.checkpoints import read_manifest, resolve_model_source

    try:
        source = resolve_model_source(model)
        return str(read_manifest(source).get("name") or model) if isinstance(source, Path) else str(source)
    except (OSError, ValueError):
        return str(model or "builtin")


def mode_availability() -> dict[str, tuple[bool, str | None]]:
    return {mode: RUNNERS[mode].available() for mode in MODES}


def create_app(
    config: ServeConfig, model_config: Any = None, store: StoreBase | None = None, pool_loader: Any = None
) -> FastAPI:
    """The app; the workers start (and the store opens, unless given) when the server starts."""
    if model_config is None:
        from fusionframes.io.checkpoints import model_config_for

        model_config = model_config_for(config.model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal store
        store = store or JobStore(config.data_dir)
        recovered = store.recover()
        if any(recovered.values()):
            logger.warning("recovered after an unclean stop: %s", json.dumps(recovered))
        store.set_meta("model", str(config.model or "builtin"))  # what the last run served
        pool = WorkerPool(
            store,
            model_config,
            config.limits,
            config.model,
            config.device,
            config.dtype,
            config.workers,
            pool_loader,
            config.threads,
        )
        app.state.context = Context(
            config, model_config, store, pool, mode_availability(), model_label(config.model)
        )
        pool.start()
        try:
            yield
        finally:
            pool.stop()
            store.close()

    app = FastAPI(
        title="FusionFrames server",
        version=__version__,
        description="Queue text-to-video, animation and movie jobs, follow their progress, download videos.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI would load from a CDN (blank offline); the schema is /openapi.json
        redoc_url=None,
    )
    from fusionframes.serve.openai_api import v1

    app.include_router(api)
    app.include_router(v1)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StorageError, storage_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    protected = config.token is not None or bool(config.users)
    app.openapi = lambda: openapi_schema(app, protected)  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"}
        )

    app.add_middleware(Guard, token=config.token, hosts=(config.host,), users=config.users)
    return app


def openapi_schema(app: FastAPI, token: bool) -> dict[str, Any]:
    """FastAPI's schema, made to say what the server does: bearer auth only when a token is set
    (401 then possible on every route), and the Guard's own refusals on every operation."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    common: dict[str, dict[str, Any]] = {
        "421": {"description": "a Host other than this server's (no-token servers answer only localhost)"},
    }
    if token:
        common["401"] = {"description": "missing or wrong token"}
    else:
        schema.get("components", {}).pop("securitySchemes", None)
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if not token or path == HEALTH_PATH:
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
            responses = operation.setdefault("responses", {})
            for code, response in common.items():
                if not (code == "401" and path == HEALTH_PATH):
                    responses.setdefault(code, response)
            if "requestBody" in operation:
                responses.setdefault("400", {"description": "a body that is not UTF-8 JSON"})
                responses.setdefault("403", {"description": "a cross-origin write (a foreign Origin)"})
                responses.setdefault("413", {"description": "a body over 64 KiB"})
    app.openapi_schema = schema
    return schema


__all__ = ["Guard", "JobRequest", "JobStatus", "ServeConfig", "create_app"]
