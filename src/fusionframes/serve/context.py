"""What every route shares: the server's settings, the store, the workers and the model, bound
per request to the user its token names; the bearer scheme and the error answers routes declare."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPBearer

from fusionframes.serve.adapters import AdapterRoot
from fusionframes.serve.schemas import ErrorDetail
from fusionframes.serve.store import (
    JOB_ID_PATTERN,
    StoreBase,
)
from fusionframes.serve.worker import Limits, WorkerPool


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
    lora_dir: Path | None = None  # the folder jobs may take LoRA adapters from (None: no adapters)


@dataclass
class Context:
    """What the routes share: the settings, the store, the workers and the model's config."""

    config: ServeConfig
    model_config: Any
    store: StoreBase
    pool: WorkerPool
    modes: dict[str, tuple[bool, str | None]]
    model_name: str = "builtin"
    inputs: tuple[str, ...] = ()  # what the model's pipeline takes beyond a prompt (runners.model_inputs)
    adapters: AdapterRoot | None = None  # the --lora-dir folder and the served model's base hashes
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


bearer = HTTPBearer(auto_error=False, description="the server's --token (or ?token= for the page/videos)")
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "missing or wrong token"},
    404: {"model": ErrorDetail, "description": "no such job"},
}
