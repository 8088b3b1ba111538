"""``fusionframes serve``: start the web UI and HTTP API.

Every option is checked before torch or the model is imported, so a bad flag or an unsafe bind (a
non-loopback host without a token) fails in milliseconds. Runs standalone too:
``python -m fusionframes.serve.cli --port 7860 --model DIR``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusionframes.serve.jobs import JobStore

MIN_PUBLIC_TOKEN = 16  # characters; a token that guards a network-reachable server must not be guessable
TOKEN_ENV = "FUSIONFRAMES_TOKEN"
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")


class ServeUsageError(ValueError):
    """A bad ``serve`` option; printed as one line, exit status 2."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "fusionframes" / "serve"


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    p.add_argument("--model", default=None, help="builtin (default) | kandinsky-video-1.0 | a model folder")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | mps | auto")
    p.add_argument("--dtype", default="auto", help="auto | float32 | float16 | bfloat16")
    p.add_argument("--workers", type=int, default=1, help="jobs rendered at once (each loads the model)")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads per worker (default: torch's choice)"
    )
    p.add_argument("--data-dir", default=None, help=f"job database and videos (default {default_data_dir()})")
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"API token guarding every route (default: ${TOKEN_ENV}); required unless --host is loopback",
    )
    p.add_argument("--max-queue", type=int, default=100, help="queued + running jobs allowed (429 beyond)")
    p.add_argument("--quota-mb", type=float, default=None, help="disk quota for videos in MiB (507 beyond)")
    p.add_argument("--max-frames", type=int, default=2000, help="frames one job may make")
    p.add_argument("--max-size", type=int, default=1024, help="largest width or height a job may ask for")
    p.add_argument("--access-log", action="store_true", help="log every request (tokens are redacted)")


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="web UI and HTTP API with a persistent job queue",
        description="Serve a page and a JSON API that queue text-to-video, animation and movie jobs.",
    )
    _add_options(p)
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
    if not 0 <= args.port <= 65535:
        raise ServeUsageError(f"port: must be between 0 and 65535, got {args.port}")
    for name in ("workers", "max_queue", "max_frames"):
        if getattr(args, name) < 1:
            raise ServeUsageError(f"{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise ServeUsageError(f"threads: must be >= 1, got {args.threads}")
    if args.workers > 16:
        raise ServeUsageError(f"workers: at most 16 (each loads the model), got {args.workers}")
    if args.max_size < 64:
        raise ServeUsageError(f"max-size: must be >= 64 pixels, got {args.max_size}")
    if args.quota_mb is not None and not args.quota_mb > 0:
        raise ServeUsageError(f"quota-mb: must be > 0, got {args.quota_mb}")
    if args.token is not None and not TOKEN_CHARS.fullmatch(args.token):
        raise ServeUsageError(
            "token: use letters, digits and - _ . ~ only (it travels in URLs, headers and a cookie)"
        )
    if not is_loopback(args.host):
        if args.token is None:
            raise ServeUsageError(
                f"token: --host {args.host} is reachable from other machines; refusing to start without "
                f"--token (or ${TOKEN_ENV}) of at least {MIN_PUBLIC_TOKEN} characters"
            )
        if len(args.token) < MIN_PUBLIC_TOKEN:
            raise ServeUsageError(
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
        raise ServeUsageError(str(error)) from None


def run_serve(args: argparse.Namespace) -> int:
    check_options(args)
    store = open_store(Path(args.data_dir).expanduser() if args.data_dir else default_data_dir())
    try:
        from fusionframes.io.checkpoints import model_config_for
        from fusionframes.runtime import resolve_device, resolve_dtype

        model_config = model_config_for(args.model)  # a missing model fails before the port is bound
        resolve_dtype(args.dtype, resolve_device(args.device))
    except BaseException:
        store.close()
        raise

    import uvicorn

    from fusionframes.serve.app import ServeConfig, create_app
    from fusionframes.serve.worker import Limits

    config = ServeConfig(
        data_dir=store.data_dir,
        host=args.host,
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
    print(
        f"fusionframes serve: http://{args.host}:{args.port}/{hint}  (data dir {store.data_dir})", flush=True
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=args.access_log,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusionframes serve", description="Web UI and HTTP API.")
    _add_options(parser)
    parser.set_defaults(handler=run_serve, command="serve")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fusionframes.serve.cli [serve] --port ...``: one-line errors, exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"fusionframes serve: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
