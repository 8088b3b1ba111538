"""``fusionframes serve``: start the web UI and HTTP API.

Every option is checked before torch or the model is imported, so a bad flag or an unsafe bind (a
non-loopback host without a token) fails in milliseconds, and so does a port another program holds.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from fusionframes.cli import options
from fusionframes.errors import UsageError

if TYPE_CHECKING:
    from fusionframes.serve.jobs import JobStore

MIN_PUBLIC_TOKEN = 16  # characters; a token that guards a network-reachable server must not be guessable
MAX_QUOTA_MB = 2.0**40  # a mebibyte count that still fits the store's 64-bit byte counts
TOKEN_ENV = "FUSIONFRAMES_TOKEN"
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "fusionframes" / "serve"


def configure_serve(p: argparse.ArgumentParser) -> None:
    p.description = "Serve a page and a JSON API that queue text-to-video, animation and movie jobs."
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=options.bounded_int(0, 65535), default=7860, help="TCP port (default 7860)")
    options.add_model_options(p)
    p.add_argument(
        "--workers",
        type=options.bounded_int(1, 16),
        default=1,
        help="jobs rendered at once (each loads the model)",
    )
    p.add_argument(
        "--threads",
        type=options.bounded_int(1),
        default=None,
        help="CPU threads per worker (default: torch's choice)",
    )
    p.add_argument("--data-dir", default=None, help=f"job database and videos (default {default_data_dir()})")
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"API token guarding every route (default: ${TOKEN_ENV}); required unless --host is loopback",
    )
    p.add_argument(
        "--max-queue",
        type=options.bounded_int(1),
        default=100,
        help="queued + running jobs allowed (429 beyond)",
    )
    p.add_argument(
        "--quota-mb",
        type=options.finite_float(high=MAX_QUOTA_MB),
        default=None,
        help="disk quota for videos in MiB, > 0 (507 beyond)",
    )
    p.add_argument("--max-frames", type=options.bounded_int(1), default=2000, help="frames one job may make")
    p.add_argument(
        "--max-size",
        type=options.bounded_int(64),
        default=1024,
        help="largest width or height a job may ask for",
    )
    p.add_argument("--access-log", action="store_true", help="log every request (tokens are redacted)")
    p.set_defaults(handler=run_serve)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_options(args: argparse.Namespace) -> None:
    """Refuse unsafe or impossible settings before anything heavy is imported."""
    if args.quota_mb is not None and not args.quota_mb > 0:
        raise UsageError(f"quota-mb: must be a finite number > 0, got {args.quota_mb:g}")
    if args.token is not None and not TOKEN_CHARS.fullmatch(args.token):
        raise UsageError(
            "token: use letters, digits and - _ . ~ only (it travels in URLs, headers and a cookie)"
        )
    if not is_loopback(args.host):
        if args.token is None:
            raise UsageError(
                f"token: --host {args.host} is reachable from other machines; refusing to start without "
                f"--token (or ${TOKEN_ENV}) of at least {MIN_PUBLIC_TOKEN} characters"
            )
        if len(args.token) < MIN_PUBLIC_TOKEN:
            raise UsageError(
                f"token: must be at least {MIN_PUBLIC_TOKEN} characters when --host is not loopback "
                '(try: python -c "import secrets; print(secrets.token_urlsafe(24))")'
            )


class RedactTokens(logging.Filter):
    """Access-log lines carry query strings; never write ``?token=...`` to a log."""

    PATTERN = re.compile(r"(token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                self.PATTERN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        record.msg = self.PATTERN.sub(r"\1***", str(record.msg))
        return True


def open_store(data_dir: Path) -> JobStore:
    """The job store, locked for this process (stdlib only, so a busy data dir fails at once)."""
    from fusionframes.serve.jobs import DataDirBusy, JobStore

    try:
        return JobStore(data_dir)
    except DataDirBusy as error:
        raise UsageError(str(error)) from None


def bind_port(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, so a port in use is one line naming ``--port`` (uvicorn would log
    a traceback-like block and exit 3), and the server serves on exactly this socket."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port: {port} on {host} is already in use by another program; choose another --port "
                "(0 picks a free one)"
            ) from None
        raise UsageError(f"host: cannot listen on {host}:{port} ({error.strerror or error})") from None
    sock.set_inheritable(True)
    return sock


def run_serve(args: argparse.Namespace) -> int:
    check_options(args)
    store = open_store(Path(args.data_dir).expanduser() if args.data_dir else default_data_dir())
    try:
        from fusionframes.io.checkpoints import model_config_for
        from fusionframes.runtime import resolve_device, resolve_dtype

        model_config = model_config_for(args.model)  # a missing model fails before the port is bound
        resolve_dtype(args.dtype, resolve_device(args.device))
        sock = bind_port(args.host, args.port)
    except BaseException:
        store.close()
        raise

    import uvicorn

    from fusionframes.serve.app import ServeConfig, create_app
    from fusionframes.serve.worker import Limits

    config = ServeConfig(
        data_dir=store.data_dir,
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        workers=args.workers,
        threads=args.threads,
        token=args.token,
        max_queue=args.max_queue,
        quota_bytes=round(args.quota_mb * 2**20) if args.quota_mb is not None else None,
        limits=Limits(max_frames=args.max_frames, max_size=args.max_size),
    )
    app = create_app(config, model_config=model_config, store=store)
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    hint = "?token=<your token>" if args.token else ""
    port = sock.getsockname()[1]
    print(f"fusionframes serve: http://{args.host}:{port}/{hint}  (data dir {store.data_dir})", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=port,
            log_level="info",
            access_log=args.access_log,
            server_header=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )
    server.run(sockets=[sock])
    return 0
