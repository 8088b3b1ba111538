"""The OpenAI-style video routes (``/v1/videos``) on the same jobs as ``/api/jobs``.

Fields and status words follow that API where it has them: a ``video`` object with ``id``,
``object``, ``model``, ``status`` (``queued``, ``in_progress``, ``completed``, ``failed``),
``progress`` (0..100), ``created_at``/``completed_at`` (Unix seconds), ``seconds`` and ``size``
(strings such as ``"4"`` and ``"512x512"``) and ``error`` (``{code, message}``). A cancelled job is
``failed`` with error code ``cancelled`` (that API has no such status word). The project's own request
options (``mode``, ``fps``, ``negative_prompt``, ``num_inference_steps``, ``motion``, ...) are extra
fields with the names of ``POST /api/jobs``; its own answers are extra fields too (``fusionframes``).

``seconds`` for text-to-video picks the number of keyframes: the model's keyframe rate (its
``base_fps``) times the seconds, at least 2. For ``mode: "animate"`` it is the animation's length.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Security
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fusionframes.serve.context import ERRORS, Ctx, bearer
from fusionframes.serve.parameters import MAX_IMAGE_TEXT
from fusionframes.serve.queueing import change_job, get_job, queue_job, status_of
from fusionframes.serve.routes import download_response
from fusionframes.serve.schemas import JobRequest
from fusionframes.serve.store import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job

VIDEO_ID = r"^(video_)?[0-9a-f]{32}$"
SIZE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")
STATUS_WORDS = {
    QUEUED: "queued",
    RUNNING: "in_progress",
    DONE: "completed",
    FAILED: "failed",
    CANCELLED: "failed",
}

v1 = APIRouter(prefix="/v1", dependencies=[Security(bearer)], tags=["OpenAI-style"])
VideoId = Annotated[
    str,
    PathParam(
        pattern=VIDEO_ID,
        description="video_ + 32 hex digits (or the bare job id)",
        examples=["video_" + "0" * 32],
    ),
]


class VideoCreate(BaseModel):
    """``POST /v1/videos``: the fields of that API, plus any field of ``POST /api/jobs``."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [{"prompt": "a red circle moving right", "size": "512x512", "seconds": "4"}]
        },
    )

    prompt: Annotated[str, Field(min_length=1, max_length=2000)]
    model: Annotated[str, Field(max_length=200)] | None = Field(None, description="the served model's name")
    size: Annotated[str, Field(pattern=SIZE.pattern)] | None = Field(None, description="WIDTHxHEIGHT")
    seconds: (
        Annotated[str, Field(pattern=r"^[0-9]{1,3}(\.[0-9]{1,3})?$")]
        | Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)]
        | None
    ) = Field(None, description="length in seconds")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    input_reference: Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_TEXT)] | None = Field(
        None,
        description="the first frame (image-to-video, for models that take one: GET /api/models): a "
        "PNG/JPEG/WebP file as base64 or a data: URL",
    )


class VideoError(BaseModel):
    code: str
    message: str


class Video(BaseModel):
    id: str
    object: Literal["video"] = "video"
    model: str
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int = Field(ge=0, le=100)
    created_at: int
    completed_at: int | None
    expires_at: int | None = None
    seconds: str | None
    size: str | None
    error: VideoError | None
    remixed_from_video_id: str | None = None
    fusionframes: dict[str, Any] = Field(description="this server's own view: status, settings, links")


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Video]
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool


def job_id_of(video_id: str) -> str:
    return video_id.removeprefix("video_")


def to_job_request(body: VideoCreate, ctx: Any) -> JobRequest:
    """The ``/api/jobs`` request that makes this video (422 naming the field when it does not fit)."""
    extra = dict(body.model_extra or {})
    if body.model is not None and body.model not in (ctx.model_name, "fusionframes"):
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["body", "model"],
                    "msg": f"model: this server serves {ctx.model_name!r}",
                    "type": "value_error",
                }
            ],
        )
    if "image" in extra:
        message = "image: this API takes the first image as input_reference"
        raise HTTPException(422, detail=[{"loc": ["body", "image"], "msg": message, "type": "value_error"}])
    request: dict[str, Any] = {**extra, "prompt": body.prompt}
    if body.input_reference is not None:
        request["image"] = body.input_reference
    if body.seed is not None:
        request["seed"] = body.seed
    if body.size is not None:
        width, height = SIZE.match(body.size).groups()  # type: ignore[union-attr]
        request["width"], request["height"] = int(width), int(height)
    mode = request.get("mode", "t2v")
    if body.seconds is not None:
        seconds = float(body.seconds)
        if mode == "animate":
            request["seconds"] = seconds
        elif mode == "t2v":
            request["num_keyframes"] = max(2, round(seconds * ctx.model_config.sampling.base_fps))
        else:
            raise HTTPException(
                422,
                detail=[
                    {
                        "loc": ["body", "seconds"],
                        "msg": "seconds: movies take durations",
                        "type": "value_error",
                    }
                ],
            )
    try:
        return JobRequest.model_validate(request)
    except ValidationError as error:
        detail = [
            {"loc": ["body", *error_loc(e["loc"])], "msg": e["msg"], "type": e["type"]}
            for e in error.errors()
        ]
        raise HTTPException(422, detail=detail) from None


def error_loc(loc: tuple) -> list[Any]:
    return [part for part in loc if isinstance(part, str | int)]


def video_of(job: Job, ctx: Any) -> Video:
    status = status_of(job, ctx)
    result = job.result or {}
    settings = job.settings or {}
    width = result.get("width") or settings.get("width")
    height = result.get("height") or settings.get("height")
    duration = result.get("duration")
    error = None
    if job.status == FAILED:
        error = VideoError(code="generation_failed", message=job.error or "failed")
    elif job.status == CANCELLED:
        error = VideoError(code="cancelled", message="the job was cancelled")
    return Video(
        id=f"video_{job.id}",
        model=job.model or ctx.model_name,
        status=STATUS_WORDS[job.status],  # type: ignore[arg-type]
        progress=round(100 * status.progress),
        created_at=int(job.created),
        completed_at=int(job.finished) if job.finished and job.status == DONE else None,
        seconds=f"{duration:g}" if duration is not None else None,
        size=f"{width}x{height}" if width and height else None,
        error=error,
        fusionframes={
            "status": job.status,
            "queue_position": status.queue_position,
            "stage": status.stage,
            "eta_seconds": status.eta_seconds,
            "job_url": f"/api/jobs/{job.id}",
            "request": status.request,
        },
    )


@v1.post(
    "/videos",
    response_model=Video,
    summary="Create a video (OpenAI-style)",
    responses={
        **ERRORS,
        429: {"description": "queue full"},
        507: {"description": "disk quota exceeded or disk full"},
    },
)
def create_video(
    body: VideoCreate,
    ctx: Ctx,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Video:
    request = to_job_request(body, ctx)
    try:
        job, _ = queue_job(request, ctx, idempotency_key)
    except HTTPException as error:  # this API's name for the image
        if error.status_code == 422 and isinstance(error.detail, list):
            error.detail = [
                image_error(e["msg"]) if e.get("loc") == ["body", "image"] else e for e in error.detail
            ]
        raise
    return video_of(job, ctx)


def image_error(message: str) -> dict[str, Any]:
    """A 422 entry naming ``input_reference`` (``/api/jobs`` calls the image ``image``)."""
    text = "input_reference:" + message.removeprefix("image:")
    return {"loc": ["body", "input_reference"], "msg": text, "type": "value_error"}


@v1.get(
    "/videos", response_model=VideoList, summary="List videos, newest first", responses={401: ERRORS[401]}
)
def list_videos(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> VideoList:
    jobs, total = ctx.store.list_jobs(limit, 0, None, owner=ctx.owner)
    return VideoList(data=[video_of(job, ctx) for job in jobs], has_more=total > len(jobs))


@v1.get("/videos/{video_id}", response_model=Video, summary="Status and progress", responses=ERRORS)
def get_video(video_id: VideoId, ctx: Ctx) -> Video:
    return video_of(get_job(ctx, job_id_of(video_id)), ctx)


@v1.get(
    "/videos/{video_id}/content",
    summary="Download the MP4",
    response_class=FileResponse,
    responses={**ERRORS, 200: {"content": {"video/mp4": {}}}, 409: {"description": "not completed"}},
)
def video_content(
    video_id: VideoId,
    ctx: Ctx,
    variant: Annotated[Literal["video"], Query(description="only 'video'")] = "video",
) -> Response:
    job = get_job(ctx, job_id_of(video_id))
    if job.status != DONE:
        raise HTTPException(
            409, detail=f"video {video_id} is {STATUS_WORDS[job.status]}; its content exists once completed"
        )
    return download_response(ctx, job.id, "mp4", f"{video_id}.mp4", "inline")


@v1.delete("/videos/{video_id}", response_model=VideoDeleted, summary="Delete a video", responses=ERRORS)
def delete_video(video_id: VideoId, ctx: Ctx) -> JSONResponse:
    """A running video is cancelled and hidden at once; its files go when its worker stops it."""
    job_id = job_id_of(video_id)
    change_job(ctx, job_id, ctx.store.delete, "video")
    return JSONResponse(VideoDeleted(id=f"video_{job_id}", deleted=True).model_dump())
