"""The ASGI guard in front of every route: tokens (header, ``?token=`` or the page's cookie), the
Host check that keeps a no-token server to loopback names (DNS rebinding), cross-origin writes,
body sizes and security headers."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from fastapi.responses import JSONResponse

MAX_BODY_BYTES = 64 * 1024
JOB_PATHS = ("/api/jobs", "/v1/videos")  # the routes that take an image when the model does
COOKIE = "fusionframes_token"
LOOPBACK_NAMES = frozenset({"localhost"})
HEALTH_PATH = "/api/health"  # open without a token, for load balancers and probes
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class Guard:
    """ASGI middleware in front of everything: token, Host and Origin checks, body size, headers."""

    def __init__(
        self,
        app: Any,
        token: str | None,
        hosts: tuple[str, ...] = (),
        users: dict[str, str] | None = None,
        job_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.job_body_bytes = max(MAX_BODY_BYTES, job_body_bytes)  # bodies with an image are larger
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
            limit = self.job_body_bytes if scope["path"] in JOB_PATHS else MAX_BODY_BYTES
            if int(length) > limit:
                return JSONResponse({"detail": f"request body larger than {limit} bytes"}, 413)
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
