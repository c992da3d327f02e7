"""Pure-ASGI middleware shared by the services and the gateway.

Pure ASGI (not BaseHTTPMiddleware) so bodies keep streaming and the hot path stays cheap.
Order, outermost first: RequestContext (request id, client IP, security headers, access log,
metrics) → CORS → CatchAll → BodyLimit → TrailingSlash → the app. Being outermost,
RequestContext and CORS decorate every response, the errors made by inner layers included.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paysys.core.clientip import UNKNOWN_PEER, TrustedProxies, resolve_scope
from paysys.core.context import client_ip_var, request_id_var, user_agent_var
from paysys.core.docs import SWAGGER_UI_BASE
from paysys.core.envelope import error_bytes
from paysys.core.logging import get_logger
from paysys.core.metrics import HTTP_LATENCY, HTTP_REQUESTS

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
# Swagger UI needs its script, styles and images (the pinned version only, with SRI hashes:
# core.docs); still no framing, no plugins.
DOCS_CSP = (
    f"default-src 'self'; script-src 'self' 'unsafe-inline' {SWAGGER_UI_BASE}/; "
    f"style-src 'self' 'unsafe-inline' {SWAGGER_UI_BASE}/; img-src 'self' data: https:; "
    "connect-src 'self'; frame-ancestors 'none'; object-src 'none'"
).encode()

log = get_logger("paysys.http")


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    """Request id (§1.3), the client's address (`core.clientip`, resolved once per request with
    `proxies`), security headers, one access-log line and metrics per request."""

    def __init__(
        self,
        app: ASGIApp,
        service: str,
        access_log: bool = True,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.access_log = access_log
        self.proxies = proxies or TrustedProxies(())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id")
        rid = incoming if incoming and REQUEST_ID_RE.match(incoming) else str(uuid.uuid4())
        if rid != incoming:
            # Forward the id we answer with, so the gateway and services agree on it.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"x-request-id"]
            scope["headers"].append((b"x-request-id", rid.encode()))
        request_id_var.set(rid)
        client_ip = resolve_scope(scope, self.proxies).ip
        client_ip_var.set(None if client_ip == UNKNOWN_PEER else client_ip)
        user_agent_var.set(header(scope, b"user-agent"))
        path: str = scope["path"]
        csp = DOCS_CSP if path == "/docs" or path.startswith("/docs/") else API_CSP
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k not in _OWNED_HEADERS]
                headers.append((b"x-request-id", rid.encode()))
                # `no-store` unless the response chose its own (SSE: `no-cache, no-transform`).
                own_cache = any(k == b"cache-control" for k, _ in headers)
                headers.extend(_NO_CACHE_HEADERS if own_cache else SECURITY_HEADERS)
                headers.append((b"content-security-policy", csp))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_label(scope)
            HTTP_REQUESTS.labels(self.service, scope["method"], route, str(status)).inc()
            HTTP_LATENCY.labels(self.service, route).observe(elapsed)
            if self.access_log and not path.startswith(("/health", "/metrics")):
                log.info(
                    "request",
                    method=scope["method"],
                    path=path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    client_ip=client_ip,
                )


_OWNED_HEADERS = {
    b"x-request-id",
    b"content-security-policy",
    *(name for name, _ in SECURITY_HEADERS if name != b"cache-control"),
}
_NO_CACHE_HEADERS = [(k, v) for k, v in SECURITY_HEADERS if k != b"cache-control"]


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return str(route.path)
    return str(scope.get("route_label", "unmatched"))


CORS_ALLOW_METHODS = b"GET, POST, PUT, PATCH, DELETE"
CORS_ALLOW_HEADERS = b"Authorization, Content-Type, X-Request-ID, Idempotency-Key"
CORS_EXPOSE_HEADERS = (
    b"X-Request-ID, Retry-After, RateLimit, RateLimit-Policy, X-RateLimit-Limit, "
    b"X-RateLimit-Remaining, X-RateLimit-Reset, Idempotent-Replayed"
)


class CORSMiddleware:
    """Allow-list CORS (§2): preflight answered first; every response to an allowed origin,
    errors included, carries the headers; a disallowed origin simply gets none."""

    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = header(scope, b"origin")
        allowed = origin is not None and origin in self.origins
        if scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method"):
            headers = [(b"vary", b"Origin")]
            if allowed:
                assert origin is not None
                headers += [
                    (b"access-control-allow-origin", origin.encode()),
                    (b"access-control-allow-credentials", b"true"),
                    (b"access-control-allow-methods", CORS_ALLOW_METHODS),
                    (b"access-control-allow-headers", CORS_ALLOW_HEADERS),
                    (b"access-control-max-age", b"600"),
                ]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if not allowed:
            await self.app(scope, receive, send)
            return
        assert origin is not None
        cors_headers = [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", CORS_EXPOSE_HEADERS),
            (b"vary", b"Origin"),
        ]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if not k.startswith(b"access-control-") and k != b"vary"
                ]
                message["headers"] = kept + cors_headers
            await send(message)

        await self.app(scope, receive, send_wrapper)


MIB = 1024 * 1024


def route_body_limits(profile_max_bytes: int) -> dict[tuple[str, str], int]:
    """Routes whose body limit differs from MAX_BODY_BYTES: the profile update carries avatar
    data URLs (api-contracts §6). One table for the gateway and the services."""
    return {(method, "/api/profile"): profile_max_bytes for method in ("PUT", "PATCH")}


class BodyLimitMiddleware:
    """413 PAYLOAD_TOO_LARGE for bodies over the route's limit, declared or streamed.

    A declared `Content-Length` over the limit is answered before the app runs (one within it
    passes untouched: the server delivers exactly that many bytes). A chunked body that passes
    the limit raises `BodyTooLarge` from `receive` (the app's HTTPException handler
    answers), or, with `disconnect=True` (the gateway, whose proxy may already be forwarding),
    is answered here while the app sees the client disconnect and its own answer is dropped.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        routes: dict[tuple[str, str], int] | None = None,
        disconnect: bool = False,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = routes or {}
        self.disconnect = disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is None and not chunked:
            await self.app(scope, receive, send)  # no body
            return
        limit = self.max_bytes
        if self.routes:
            path = scope["path"]
            key = (scope["method"], path[:-1] if path.endswith("/") and len(path) > 1 else path)
            limit = self.routes.get(key, limit)
        message = f"Request body exceeds {_size(limit)}"
        if not chunked and declared is not None:
            if declared.isdigit() and int(declared) > limit:
                await send_error(send, 413, "PAYLOAD_TOO_LARGE", message)
                return
            # The server's parser delivers exactly Content-Length bytes: nothing to count.
            await self.app(scope, receive, send)
            return
        received = 0
        answered = False

        async def limited_receive() -> Message:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message_in = await receive()
            if message_in["type"] == "http.request":
                received += len(message_in.get("body", b""))
                if received > limit:
                    if not self.disconnect:
                        # An HTTPException: the app's HTTPException handler answers the 413.
                        raise BodyTooLarge(message)
                    answered = True
                    if not started:
                        await send_error(send, 413, "PAYLOAD_TOO_LARGE", message)
                    return {"type": "http.disconnect"}
            return message_in

        started = False

        async def tracked_send(message_out: Message) -> None:
            nonlocal started
            if answered:
                return  # the 413 went out instead
            if message_out["type"] == "http.response.start":
                started = True
            await send(message_out)

        await self.app(scope, limited_receive, tracked_send if self.disconnect else send)


def _size(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit} bytes"


class BodyTooLarge(HTTPException):
    """An HTTPException so FastAPI's body parsing re-raises it to the error handler."""

    def __init__(self, message: str = "Request body exceeds 1 MiB") -> None:
        super().__init__(status_code=413, detail=message)


class TrailingSlashMiddleware:
    """`/api/x/` is served exactly like `/api/x` (one trailing slash removed, in `path` and
    `raw_path`), so no router ever answers with a redirect: FastAPI's `redirect_slashes` would
    send a 307 naming the service's own address (api-contracts §2.1)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if len(path) > 1 and path.endswith("/") and scope["type"] in ("http", "websocket"):
            raw = scope.get("raw_path")
            if raw is None or raw.endswith(b"/"):  # in place: outer layers read the route
                scope["path"] = path[:-1]
                if raw is not None:
                    scope["raw_path"] = raw[:-1]
        await self.app(scope, receive, send)


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    details: object = None,
) -> None:
    body = error_bytes(code, message, details)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class CatchAllMiddleware:
    """Turns an unexpected exception into 500 INTERNAL_ERROR inside the stack, so the response
    still passes the request-id, security-header and CORS layers (Starlette's own last-resort
    handler sits outside all user middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error", path=scope.get("path"))
            if not started:
                await send_error(send, 500, "INTERNAL_ERROR", "An unexpected error occurred")
