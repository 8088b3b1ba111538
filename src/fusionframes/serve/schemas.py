"""The request and answer shapes of ``/api`` (pydantic): what the OpenAPI schema says and FastAPI
checks before a route runs. Checks that need the model (sizes, frame counts) are in
:mod:`fusionframes.serve.parameters`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fusionframes.serve.adapters import MAX_LORAS
from fusionframes.serve.parameters import MAX_IMAGE_TEXT, MOTION_MAX

MAX_PROMPT = 2000
MAX_SCENES = 16
MAX_STEPS = 500

Prompt = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PROMPT)]
FpsNumber = Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)]
Scale = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class LoraEntry(BaseModel):
    """One adapter of a job's ``lora``: a folder under the server's ``--lora-dir`` and its scale."""

    model_config = ConfigDict(extra="forbid", strict=True)

    path: Short = Field(description="adapter folder, relative to the server's --lora-dir")
    scale: Annotated[float, Field(allow_inf_nan=False)] = Field(
        1.0, description="multiplies the adapter's update (1 = as trained, 0 = the base model)"
    )


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
        | Annotated[float, Field(ge=0, le=MOTION_MAX, allow_inf_nan=False)]
        | dict[Short, Short | Annotated[float, Field(allow_inf_nan=False)]]
        | Annotated[list[Short], Field(max_length=MAX_SCENES)]
        | None
    ) = Field(
        None,
        description="t2v, models that take a motion level (GET /api/models: current.inputs): low | "
        "medium | high | extreme or a score; animate: camera preset ('zoom_in', 'pan_left+zoom_in') or "
        "custom schedules {'zoom': '0:(1.02)'}; movie: one of those, or a list with one preset per scene",
    )
    image: Annotated[str, StringConstraints(min_length=1, max_length=MAX_IMAGE_TEXT)] | None = Field(
        None,
        description="t2v, models that animate an image (GET /api/models: current.inputs): the first "
        "frame, a PNG/JPEG/WebP file as base64 or a data: URL, at most 8 MiB",
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
    lora: Annotated[list[Short | LoraEntry], Field(min_length=1, max_length=MAX_LORAS)] | None = Field(
        None,
        description="LoRA adapters for this job only, on servers started with --lora-dir (GET /api/models: "
        "current.lora): 'PATH' or 'PATH:SCALE' or {path, scale}, PATH relative to that folder",
    )


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
