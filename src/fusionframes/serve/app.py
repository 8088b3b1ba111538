"""The web app: a JSON API over the job queue, a server-sent-events progress stream, and one page.

Security model (see docs/serve.md): the server binds to localhost by default; an optional token guards
every route (``Authorization: Bearer``, a ``?token=`` query parameter, or the cookie the page gets when
opened with ``?token=``). Without a token only loopback ``Host`` headers are accepted (DNS rebinding),
cross-origin writes are refused, request bodies are small, and files are only ever served from the
data dir's ``outputs/`` folder by job id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from fusionframes import __version__
from fusionframes.serve.adapters import AdapterRoot
from fusionframes.serve.context import Context, ServeConfig
from fusionframes.serve.guard import HEALTH_PATH, MAX_BODY_BYTES, Guard
from fusionframes.serve.health import info
from fusionframes.serve.jobs import JobStore
from fusionframes.serve.parameters import MAX_IMAGE_TEXT
from fusionframes.serve.queueing import STORE_REFUSALS, store_refusal
from fusionframes.serve.routes import api
from fusionframes.serve.runners import animation_problem, model_inputs
from fusionframes.serve.schemas import JobRequest, JobStatus
from fusionframes.serve.store import StorageError, StoreBase
from fusionframes.serve.worker import MODES, RUNNERS, WorkerPool

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


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


def model_label(model: str | None) -> str:
    """The name a model folder gives itself (its manifest), else what was passed to ``--model``."""
    from fusionframes.io.checkpoints import read_manifest, resolve_model_source

    try:
        source = resolve_model_source(model)
        return str(read_manifest(source).get("name") or model) if isinstance(source, Path) else str(source)
    except (OSError, ValueError):
        return str(model or "builtin")


def mode_availability(model_config: Any, name: str) -> dict[str, tuple[bool, str | None]]:
    """Per mode: whether this install has its pipeline and the model can run it, and why not."""
    modes = {mode: RUNNERS[mode].available() for mode in MODES}
    problem = animation_problem(model_config)
    for mode in ("animate", "movie"):
        if modes[mode][0] and problem is not None:
            modes[mode] = (False, f"mode {mode!r} is not available for the model {name!r}: {problem}")
    return modes


def create_app(
    config: ServeConfig, model_config: Any = None, store: StoreBase | None = None, pool_loader: Any = None
) -> FastAPI:
    """The app; the workers start (and the store opens, unless given) when the server starts."""
    if model_config is None:
        from fusionframes.io.checkpoints import model_config_for

        model_config = model_config_for(config.model)
    inputs = model_inputs(model_config)
    adapters = AdapterRoot.open(config.lora_dir, config.model) if config.lora_dir is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal store
        store = store or JobStore(config.data_dir)
        recovered = store.recover()
        if any(recovered.values()):
            logger.warning("recovered after an unclean stop: %s", json.dumps(recovered))
        store.set_meta("model", str(config.model or "builtin"))  # what the last run served
        name = model_label(config.model)
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
            adapters=adapters,
        )
        app.state.context = Context(
            config, model_config, store, pool, mode_availability(model_config, name), name, inputs, adapters
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
    app.include_router(info)
    app.include_router(v1)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StorageError, storage_error)
    for refusal in STORE_REFUSALS:
        app.add_exception_handler(refusal, store_refusal)
    app.add_exception_handler(StarletteHTTPException, http_error)
    protected = config.token is not None or bool(config.users)
    app.openapi = lambda: openapi_schema(app, protected)  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"}
        )

    job_body = MAX_IMAGE_TEXT + MAX_BODY_BYTES if "image" in inputs else MAX_BODY_BYTES
    app.add_middleware(
        Guard, token=config.token, hosts=(config.host,), users=config.users, job_body_bytes=job_body
    )
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
                responses.setdefault(
                    "413", {"description": "a body over 64 KiB (one with an image: over its limit)"}
                )
    app.openapi_schema = schema
    return schema


__all__ = ["Guard", "JobRequest", "JobStatus", "ServeConfig", "create_app"]
