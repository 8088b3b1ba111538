"""``/api/models`` (the model served, its modes, inputs and limits) and ``/api/health`` (readiness,
open without a token for load balancers)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Response, Security

from fusionframes import __version__
from fusionframes.serve.adapters import LORA_NOTE, MAX_LORAS
from fusionframes.serve.context import ERRORS, Context, Ctx, bearer
from fusionframes.serve.parameters import inputs_info
from fusionframes.serve.schemas import (
    MAX_PROMPT,
    MAX_SCENES,
    MAX_STEPS,
    Health,
    ModeInfo,
    ModelsInfo,
    WorkerInfo,
)
from fusionframes.serve.store import (
    FORMATS,
)
from fusionframes.serve.worker import MODES

info = APIRouter(prefix="/api", dependencies=[Security(bearer)])


@info.get(
    "/models", response_model=ModelsInfo, summary="The model served, modes and limits", responses=ERRORS
)
def models(ctx: Ctx) -> ModelsInfo:
    from fusionframes.io.checkpoints import list_models

    config = ctx.model_config
    current = {
        "name": ctx.model_name,
        "source": str(ctx.config.model or "builtin"),
        "pixel_multiple": config.pixel_multiple,
        "num_keyframes": config.keyframe_unet.num_frames,
        "defaults": asdict(config.sampling),
        **inputs_info(ctx.inputs),  # inputs: what its pipeline takes beyond a prompt; notes: what not
        "lora": {"enabled": False, "note": LORA_NOTE}
        if ctx.adapters is None
        else {"enabled": True, "adapters": ctx.adapters.listing(), "max_per_job": MAX_LORAS},
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
        options = {"fps": ["low", "medium", "high"], "inputs": list(ctx.inputs)}
    elif available:
        from fusionframes.camera import BORDER_MODES, PRESET_NAMES

        options = {"motion_presets": list(PRESET_NAMES), "borders": list(BORDER_MODES)}
        if mode == "movie":
            options |= {"transitions": ["cut", "crossfade", "continue"], "scene_modes": ["t2v", "animate"]}
    return ModeInfo(available=available, reason=reason, options=options)


@info.get(
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
