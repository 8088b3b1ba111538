"""``fusionframes serve`` (the web UI and HTTP API) and ``fusionframes worker`` (jobs without a web
server, on any host that reaches the job store).

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
    from fusionframes.serve.store import StoreBase

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
        type=options.bounded_int(0, 16),
        default=1,
        help="jobs rendered at once in this process (each loads the model); 0: API only (needs a "
        "PostgreSQL --store and `fusionframes worker` processes)",
    )
    p.add_argument(
        "--threads",
        type=options.bounded_int(1),
        default=None,
        help="CPU threads per worker (default: torch's choice)",
    )
    p.add_argument("--data-dir", default=None, help=f"job database and videos (default {default_data_dir()})")
    add_store_options(p, required=False)
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"API token guarding every route (default: ${TOKEN_ENV}); required unless --host is loopback",
    )
    p.add_argument(
        "--user-tokens",
        default=None,
        metavar="FILE",
        help="one 'NAME TOKEN' per line: users who see and cancel only their own jobs (--token is the "
        "admin token, which sees all)",
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
    add_lora_dir_option(p)
    p.add_argument("--access-log", action="store_true", help="log every request (tokens are redacted)")
    p.set_defaults(handler=run_serve)


def add_lora_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lora-dir",
        default=None,
        metavar="DIR",
        help="the folder jobs may take LoRA adapters from (job parameter lora, paths relative to it); "
        "default: jobs take no adapters",
    )


def lora_dir(args: argparse.Namespace) -> Path | None:
    """``--lora-dir``, checked before the model is loaded."""
    if args.lora_dir is None:
        return None
    folder = Path(args.lora_dir).expanduser()
    if not folder.is_dir():
        raise UsageError(f"lora-dir: {folder} is not a folder")
    return folder


NAME_CHARS = re.compile(r"[A-Za-z0-9._@-]{1,64}")


def read_user_tokens(path: str) -> dict[str, str]:
    """``NAME TOKEN`` per line (``#`` comments) -> {token: name}; each name and token once."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"user-tokens: cannot read {path} ({error})") from None
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not NAME_CHARS.fullmatch(parts[0]) or not TOKEN_CHARS.fullmatch(parts[1]):
            raise UsageError(
                f"user-tokens: {path} line {number}: want 'NAME TOKEN' (name: letters, digits, . _ @ -; "
                "token: letters, digits, - _ . ~)"
            )
        name, token = parts
        if token in users or name in users.values():
            raise UsageError(f"user-tokens: {path} line {number}: {name!r} or its token is listed twice")
        users[token] = name
    if not users:
        raise UsageError(f"user-tokens: {path} lists no users")
    return users


def add_store_options(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("job store")
    g.add_argument(
        "--store",
        default=None,
        required=required,
        help="postgresql://USER@HOST:PORT/DB: one queue for many API and worker processes "
        "(default: SQLite in --data-dir, one process)",
    )
    g.add_argument(
        "--artifacts",
        default=None,
        required=required,
        help="where results go, reachable by every API and worker process: a folder, or "
        "s3://BUCKET/PREFIX (boto3; AWS_ENDPOINT_URL for S3-compatible servers); default DATA_DIR/outputs",
    )
    g.add_argument(
        "--lease",
        type=options.finite_float(low=1.0, high=3600.0),
        default=30.0,
        help="seconds a claimed job stays with a worker that stopped renewing it (PostgreSQL; default 30)",
    )


def check_store(args: argparse.Namespace) -> None:
    store = getattr(args, "store", None)
    if store is not None and not store.startswith(("postgresql://", "postgres://")):
        raise UsageError(
            f"store: use a postgresql:// URL (got {store.split(':', 1)[0]!r}); the default is SQLite"
        )
    if getattr(args, "workers", 1) == 0 and store is None:
        raise UsageError(
            "workers: 0 (API only) needs --store postgresql://... that `fusionframes worker` processes share"
        )


def open_shared_store(args: argparse.Namespace, data_dir: Path | None) -> StoreBase:
    """The PostgreSQL store (a missing driver or an unreachable server is one line)."""
    try:
        from fusionframes.serve.pgstore import open_store as open_postgres
    except ImportError:
        raise UsageError("store: PostgreSQL needs psycopg (pip install 'psycopg[binary]')") from None
    from fusionframes.serve.store import StorageError

    artifacts: str | Path = args.artifacts or (data_dir or default_data_dir()) / "outputs"
    if not str(artifacts).startswith("s3://"):
        artifacts = Path(artifacts).expanduser()
    try:
        return open_postgres(args.store, artifacts, lease_s=args.lease)
    except StorageError as error:
        raise UsageError(f"store: {error}") from None
    except Exception as error:  # boto3: a missing bucket, no credentials, an unreachable endpoint
        if type(error).__module__.startswith(("botocore", "boto3")):
            raise UsageError(f"artifacts: {artifacts}: {error}") from None
        raise


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_options(args: argparse.Namespace) -> None:
    """Refuse unsafe or impossible settings before anything heavy is imported."""
    check_store(args)
    lora_dir(args)
    if args.quota_mb is not None and not args.quota_mb > 0:
        raise UsageError(f"quota-mb: must be a finite number > 0, got {args.quota_mb:g}")
    if args.token is not None and not TOKEN_CHARS.fullmatch(args.token):
        raise UsageError(
            "token: use letters, digits and - _ . ~ only (it travels in URLs, headers and a cookie)"
        )
    users = read_user_tokens(args.user_tokens) if getattr(args, "user_tokens", None) else {}
    if args.token is not None and args.token in users:
        raise UsageError("user-tokens: a user token must differ from the admin --token")
    args.users = users
    if not is_loopback(args.host):
        short = [name for token, name in users.items() if len(token) < MIN_PUBLIC_TOKEN]
        if short:
            raise UsageError(
                f"user-tokens: {short[0]}'s token must be at least {MIN_PUBLIC_TOKEN} characters when --host "
                "is not loopback"
            )
        if args.token is None and users:
            return
        if args.token is None:
            raise UsageError(
                f"token: --host {args.host} is reachable from other machines; refusing to start without "
                f"--token (or ${TOKEN_ENV}) of at least {MIN_PUBLIC_TOKEN} characters, or --user-tokens"
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


def open_store(data_dir: Path) -> StoreBase:
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
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else None
    store = open_shared_store(args, data_dir) if args.store else open_store(data_dir or default_data_dir())
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
        host=args.host,
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        workers=args.workers,
        threads=args.threads,
        token=args.token,
        users=args.users,
        max_queue=args.max_queue,
        quota_bytes=round(args.quota_mb * 2**20) if args.quota_mb is not None else None,
        limits=Limits(max_frames=args.max_frames, max_size=args.max_size),
        lora_dir=lora_dir(args),
    )
    try:
        app = create_app(config, model_config=model_config, store=store)
    except ValueError as error:  # --lora-dir: the served model's networks could not be hashed
        sock.close()
        store.close()
        raise UsageError(str(error)) from None
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    hint = "?token=<your token>" if args.token or args.users else ""
    port = sock.getsockname()[1]
    where = (
        f"store {redact_url(args.store)}, artifacts {store.artifacts}"
        if args.store
        else f"data dir {store.data_dir}"
    )
    print(f"fusionframes serve: http://{args.host}:{port}/{hint}  ({where})", flush=True)
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


def redact_url(url: str) -> str:
    """A store URL for logs: any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


# ---------------------------------------------------------------------------------------------- worker


def configure_worker(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run queued jobs from a shared job store (PostgreSQL) without a web server: start one per GPU "
        "or host; API processes (fusionframes serve --store ... --workers 0) take the requests."
    )
    add_store_options(p, required=True)
    options.add_model_options(p)
    p.add_argument("--workers", type=options.bounded_int(1, 16), default=1, help="jobs rendered at once here")
    p.add_argument("--threads", type=options.bounded_int(1), default=None, help="CPU threads per job")
    p.add_argument("--max-frames", type=options.bounded_int(1), default=2000, help="frames one job may make")
    p.add_argument("--max-size", type=options.bounded_int(64), default=1024, help="largest width or height")
    add_lora_dir_option(p)
    p.set_defaults(handler=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    """Claim, render and finish jobs until SIGTERM or Ctrl-C (running jobs go back to the queue)."""
    import signal
    import threading

    check_store(args)
    adapters_dir = lora_dir(args)
    store = open_shared_store(args, None)
    try:
        from fusionframes.io.checkpoints import model_config_for
        from fusionframes.runtime import resolve_device, resolve_dtype
        from fusionframes.serve.adapters import AdapterRoot
        from fusionframes.serve.worker import Limits, WorkerPool

        model_config = model_config_for(args.model)
        resolve_dtype(args.dtype, resolve_device(args.device))
        pool = WorkerPool(
            store,
            model_config,
            Limits(max_frames=args.max_frames, max_size=args.max_size),
            args.model,
            args.device,
            args.dtype,
            args.workers,
            None,
            args.threads,
            # the API process checked each job's adapters against the model; this one checks them again
            # against its own networks when it attaches them, so it needs no hashes of its own
            adapters=AdapterRoot.open(adapters_dir, args.model, hashes={}) if adapters_dir else None,
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        pool.start()
        print(
            f"fusionframes worker {store.process_id}: {args.workers} worker(s) on {redact_url(args.store)}, "
            f"artifacts {store.artifacts}",
            flush=True,
        )
        try:
            while not stop.wait(1.0):
                if pool.states and all(state.state == "error" for state in pool.states):
                    raise UsageError(f"model: {pool.states[0].error}")
        except KeyboardInterrupt:
            pass
        pool.stop()
    finally:
        store.close()
    return 0
