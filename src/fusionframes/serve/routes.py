"""The ``/api/jobs`` routes: queue, list, status, progress events, download, cancel, delete."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, Security
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from fusionframes.serve.context import ERRORS, Context, Ctx, JobId, bearer
from fusionframes.serve.queueing import (
    change_job,
    get_job,
    queue_job,
    status_of,
)
from fusionframes.serve.schemas import (
    ErrorDetail,
    JobList,
    JobRequest,
    JobStatus,
)
from fusionframes.serve.store import (
    DONE,
    FINAL,
    MAX_OFFSET,
)

MEDIA_TYPES = {"mp4": "video/mp4", "gif": "image/gif", "webp": "image/webp"}
SSE_POLL_S = 0.25
SSE_PING_S = 15.0
api = APIRouter(prefix="/api", dependencies=[Security(bearer)])


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


IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


@api.get(
    "/jobs/{job_id}/image",
    summary="The image a job was given (image-to-video), to make the job again",
    response_class=Response,
    responses={**ERRORS, 200: {"content": {t: {} for t in IMAGE_TYPES.values()}, "description": "the file"}},
)
def job_image(job_id: JobId, ctx: Ctx) -> Response:
    job = get_job(ctx, job_id)
    data = ctx.store.input_image(job.id) if job.params.get("image") is not None else None
    if data is None:
        raise HTTPException(404, detail=f"job {job_id} was not given an image")
    media = IMAGE_TYPES.get(str(job.params["image"].get("format")), "application/octet-stream")
    return Response(data, media_type=media, headers={"Content-Disposition": "inline"})


@api.post(
    "/jobs/{job_id}/cancel",
    response_model=JobStatus,
    summary="Cancel a queued or running job",
    responses={**ERRORS, 409: {"model": ErrorDetail, "description": "already finished"}},
)
def cancel_job(job_id: JobId, ctx: Ctx) -> JobStatus:
    """A running job stops within one denoising step; poll or watch events for ``cancelled``."""
    return status_of(change_job(ctx, job_id, ctx.store.request_cancel), ctx)


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
    if change_job(ctx, job_id, ctx.store.delete):
        return Response(status_code=204)
    return JSONResponse(
        {"detail": f"job {job_id} is running: cancelling it; it is deleted when it stops"}, 202
    )
