"""The streaming reverse proxy: `/api/{auth,payments,admin,profile}/**` → the service.

Pure ASGI, one pass over the request headers, no per-path routing table. Per request:
classify the path → the client's in-flight cap (`inflight.py`) → edge auth (JWT, pure CPU) →
one Redis round trip (revocation + rate limit, see `ratelimit.py`) → the body, read before
anything goes upstream (`bodies.py`) → a slot of the service's own pool (`pools.py`) → forward
through that pool's aiohttp session (keep-alive) → copy the answer back, chunk by chunk.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import ClientRequest
from multidict import CIMultiDict, istr
from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send
from yarl import URL

from paysys.core.allow import MethodTable
from paysys.core.clientip import Forwarded, TrustedProxies, client_key, resolve_scope
from paysys.core.config import Settings
from paysys.core.context import request_id_var
from paysys.core.errors import AppError
from paysys.core.logging import get_logger
from paysys.core.middleware import send_error
from paysys.core.tokens import Principal, TokenCodec, VerifiedTokens
from paysys.gateway.bodies import ClientGone, StreamedBody, read_more
from paysys.gateway.inflight import InFlight
from paysys.gateway.pools import ServiceClient, build_clients, proxy_session
from paysys.gateway.ratelimit import RATE_LIMITED, Policy, RateLimiter
from paysys.gateway.upstreams import ServicePool, Upstream

log = get_logger("paysys.gateway")

UPSTREAM_ERRORS = Counter(
    "paysys_gateway_upstream_errors_total",
    "Upstream failures seen by the gateway",
    ["service", "kind"],
)

# --- header rules -------------------------------------------------------------------------

# Request headers the proxy handles itself (value: what to do with it).
_KEEP, _DROP, _AUTH, _CONN, _XFP, _XFH, _HOST, _LEN, _TE = range(9)
_REQUEST_HEADERS: dict[bytes, int] = {
    b"authorization": _AUTH,
    b"content-length": _LEN,
    b"transfer-encoding": _TE,
    b"connection": _CONN,
    b"host": _HOST,
    b"x-forwarded-for": _DROP,  # rebuilt from the resolved client (core.clientip)
    b"x-forwarded-proto": _XFP,
    b"x-forwarded-host": _XFH,
    # hop-by-hop (RFC 9110 §7.6.1) and proxy-only
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"proxy-authorization": _DROP,
    b"proxy-authenticate": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"upgrade": _DROP,
    b"expect": _DROP,  # the ASGI server already answered 100-continue
    # set by the gateway only: a client must not choose them
    b"x-request-id": _DROP,
    b"x-real-ip": _DROP,
    b"x-client-ip": _DROP,
    b"x-forwarded-port": _DROP,
    b"x-forwarded-prefix": _DROP,
    b"forwarded": _DROP,
}
# Internal identity headers: never accepted from a client.
IDENTITY_PREFIXES = (b"x-user-", b"x-internal-", b"x-auth-", b"x-gateway-", b"x-principal-")

_RESPONSE_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"date",  # the ASGI server sets its own
        b"server",
    }
)

# Responses up to this size are read in one piece (one ASGI body message instead of a loop).
SMALL_BODY = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})
# Connections of the gateway's own session (readiness probes, OpenAPI documents): kept apart
# from the services' request pools, so a busy service's pool never delays its probe.
CONTROL_POOL_SIZE = 100
_RETRY_SOON = (b"retry-after", b"1")

# --- edge auth rules ----------------------------------------------------------------------

AUTH_BEARER_PATHS = frozenset(
    {"/api/auth/logout", "/api/auth/me", "/api/auth/password", "/api/auth/sessions"}
)
AUTH_LIMITED_ENDPOINTS = ("login", "register", "refresh")
WEBHOOK_PATH = "/api/payments/webhooks/psp"


def requires_bearer(service: str, path: str, method: str) -> bool:
    """Which forwarded routes need a valid access token at the edge (api-contracts §2/§3)."""
    if service == "auth":
        trimmed = path.rstrip("/")
        return trimmed in AUTH_BEARER_PATHS or trimmed.startswith("/api/auth/sessions/")
    if service == "payments":
        return not (method == "POST" and path.rstrip("/") == WEBHOOK_PATH)
    return True  # admin, profile


class _ProxyRequest(ClientRequest):
    """aiohttp request that adds no headers of its own (no Accept, Accept-Encoding,
    User-Agent or Content-Type the client did not send): the proxy forwards what it got."""

    DEFAULT_HEADERS: dict[istr, str] = {}
    _skip_auto_headers = CIMultiDict({"Content-Type": None})

    def update_auto_headers(self, skip_auto_headers: Any) -> None:
        return None


# --- the proxy ------------------------------------------------------------------------------


class Proxy:
    """State shared by the proxy's requests: sessions, pools, caps, limiter, codec, policies."""

    def __init__(self, settings: Settings, pools: dict[str, ServicePool]) -> None:
        self.settings = settings
        self.pools = pools
        sizes = settings.pool_sizes()
        self.clients: dict[str, ServiceClient] = build_clients(
            {name: sizes[name] for name in pools}, settings.gateway_pool_wait
        )
        self.in_flight = InFlight(settings.max_in_flight_per_client)
        self.buffer_limit = settings.max_body_bytes
        self.tokens = VerifiedTokens(TokenCodec(settings))
        self.address = TrustedProxies(settings.trusted_proxies)
        self.default_policy = Policy("default", settings.rate_limit_max, settings.rate_limit_window)
        self.auth_policies: dict[str, tuple[str, Policy]] = {}
        for endpoint in AUTH_LIMITED_ENDPOINTS:
            policy = Policy(
                f"auth-{endpoint}", settings.auth_rate_limit_max, settings.auth_rate_limit_window
            )
            for path in (f"/api/auth/{endpoint}", f"/api/auth/{endpoint}/"):
                self.auth_policies[path] = (f"{endpoint}:", policy)
        self.labels = {name: f"/api/{name}/**" for name in pools}
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.upstream_timeout, sock_read=settings.upstream_timeout
        )
        self.session: aiohttp.ClientSession | None = None
        self.limiter: RateLimiter | None = None
        # The paths of the merged OpenAPI document and their methods (None until the first
        # document: every method is forwarded and the service answers its own 405).
        self.methods: MethodTable | None = None

    def set_methods(self, methods: MethodTable) -> None:
        self.methods = methods

    def start(self, limiter: RateLimiter) -> aiohttp.ClientSession:
        """Open the services' pools and the gateway's own session (returned: probes, OpenAPI)."""
        for client in self.clients.values():
            client.start(_ProxyRequest, self.timeout)
        self.session = proxy_session(CONTROL_POOL_SIZE, _ProxyRequest, self.timeout)
        self.limiter = limiter
        return self.session

    async def stop(self) -> None:
        for client in self.clients.values():
            await client.close()
        if self.session is not None:
            await self.session.close()
            self.session = None

    # -- per request ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        end = path.find("/", 5)
        service = path[5:] if end < 0 else path[5:end]
        pool = self.pools.get(service)
        if pool is None:
            scope["route_label"] = "/api/*"
            await send_error(send, 404, "NOT_FOUND", "Route not found")
            return
        scope["route_label"] = self.labels[service]
        # A known path, a method it does not have: 405 with its `Allow` (api-contracts §1.4),
        # before auth and limits, as a service answers it (its router runs before any check).
        methods = self.methods
        if methods is not None:
            allow = methods.refusal(path, scope["method"])
            if allow is not None:
                await send_error(
                    send,
                    405,
                    "METHOD_NOT_ALLOWED",
                    "Method not allowed",
                    [(b"allow", allow.encode())],
                )
                return
        # Resolved once per request by RequestContextMiddleware (the same TrustedProxies).
        forwarded = resolve_scope(scope, self.address)
        client = client_key(forwarded.ip)  # IPv6 per /64 (api-contracts §2.1)
        in_flight = self.in_flight
        if not in_flight.enter(client):
            await send_error(
                send,
                429,
                "RATE_LIMIT_EXCEEDED",
                "Too many requests in flight from this client, retry later",
                [_RETRY_SOON],
            )
            return
        try:
            await self._handle(scope, receive, send, service, pool, client, forwarded)
        finally:
            in_flight.leave(client)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        pool: ServicePool,
        client: str,
        forwarded: Forwarded,
    ) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        authorization = connection = xfp = xfh = host = length = None
        has_body = False
        forward: list[tuple[str, str]] = []
        append = forward.append
        for name, value in scope["headers"]:
            action = _REQUEST_HEADERS.get(name)
            if action is None:
                if name[:2] == b"x-" and name.startswith(IDENTITY_PREFIXES):
                    continue
                append((name.decode("latin-1"), value.decode("latin-1")))
            elif action == _AUTH:
                if authorization is None:  # the first one, as the services read it
                    authorization = value
                append(("authorization", value.decode("latin-1")))
            elif action == _LEN:
                if value != b"0":
                    has_body = True
                    length = value
                append(("content-length", value.decode("latin-1")))
            elif action == _TE:
                has_body = True
            elif action == _CONN:
                connection = value
            elif action == _HOST:
                host = value
            elif action == _XFP:
                xfp = value
            elif action == _XFH:
                xfh = value
        if connection is not None:
            forward = _drop_connection_tokens(forward, connection)

        # Edge auth (pure CPU; no Redis yet).
        principal: Principal | None = None
        if requires_bearer(service, path, method):
            try:
                principal = self.tokens.principal(authorization)
            except AppError as error:
                await send_error(send, error.status, error.code, error.message)
                return
            if service == "admin" and principal.role != "ADMIN":
                await send_error(send, 403, "FORBIDDEN", "This action requires role ADMIN")
                return

        client_ip, forwarded_for, trusted = forwarded

        # One Redis round trip: revocation marks (if authenticated) + the sliding window.
        # Per-client buckets count IPv6 clients per /64 (api-contracts §2.1).
        special = self.auth_policies.get(path) if service == "auth" else None
        if special is not None:
            key = special[0] + client
            policy = special[1]
        elif principal is not None:
            key = "u:" + str(principal.id)
            policy = self.default_policy
        else:
            key = "ip:" + client
            policy = self.default_policy
        assert self.limiter is not None
        decision = await self.limiter.hit(key, policy, principal if special is None else None)
        if decision.revoked:
            await send_error(send, 401, "TOKEN_INVALID", "Token has been revoked")
            return
        limit_headers = decision.headers()
        if not decision.allowed:
            RATE_LIMITED.labels(policy.name).inc()
            await send_error(
                send, 429, "RATE_LIMIT_EXCEEDED", "Too many requests, retry later", limit_headers
            )
            return

        append = forward.append
        append(("x-forwarded-for", forwarded_for))
        append(("x-real-ip", client_ip))
        append(
            (
                "x-forwarded-proto",
                xfp.decode("latin-1") if trusted and xfp else scope.get("scheme", "http"),
            )
        )
        forwarded_host = xfh if trusted and xfh else host
        if forwarded_host is not None:
            append(("x-forwarded-host", forwarded_host.decode("latin-1")))
        rid = request_id_var.get()
        if rid:
            append(("x-request-id", rid))

        raw_path: bytes = scope.get("raw_path") or path.encode()
        query: bytes = scope["query_string"]
        target = (raw_path + b"?" + query if query else raw_path).decode("latin-1")

        # The body before anything goes upstream (bodies.py): a client still sending holds no
        # connection and no pool slot.
        body: bytes | StreamedBody | None = None
        if has_body:
            first = await receive()
            if first["type"] == "http.disconnect":
                return
            chunk: bytes = first.get("body", b"")
            body = chunk
            if first.get("more_body", False):
                declared = int(length) if length is not None and length.isdigit() else None
                body = await read_more(chunk, receive, declared, self.buffer_limit)
                if body is None:  # gone, or refused (413/408) outside the proxy: forward nothing
                    return
        await self.forward(send, pool, method, target, forward, body, limit_headers)

    async def forward(
        self,
        send: Send,
        pool: ServicePool,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | StreamedBody | None,
        limit_headers: list[tuple[bytes, bytes]],
    ) -> None:
        client = self.clients[pool.name]
        if not client.try_acquire() and not await client.acquire():
            UPSTREAM_ERRORS.labels(pool.name, "pool_full").inc()
            await send_error(
                send,
                503,
                "SERVICE_UNAVAILABLE",
                f"The {pool.name} service is busy, retry later",
                [*limit_headers, _RETRY_SOON],
            )
            return
        try:
            await self._forward(client, send, pool, method, target, headers, body, limit_headers)
        finally:
            client.release()

    async def _forward(
        self,
        client: ServiceClient,
        send: Send,
        pool: ServicePool,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | StreamedBody | None,
        limit_headers: list[tuple[bytes, bytes]],
    ) -> None:
        session = client.session
        assert session is not None
        streamed = body if isinstance(body, StreamedBody) else None
        retryable = (method == "GET" or method == "HEAD") and streamed is None
        tried: tuple[Upstream, ...] = ()
        while True:
            upstream = pool.choose(tried)
            if upstream is None:
                if tried:  # every other URL is down too: report the last failure
                    await send_error(
                        send,
                        502,
                        "BAD_GATEWAY",
                        f"The {pool.name} service could not be reached",
                        limit_headers,
                    )
                    return
                UPSTREAM_ERRORS.labels(pool.name, "circuit_open").inc()
                await send_error(
                    send,
                    503,
                    "SERVICE_UNAVAILABLE",
                    f"The {pool.name} service is unavailable, retry later",
                    [*limit_headers, _RETRY_SOON],
                )
                return
            try:
                response = await session.request(
                    method,
                    URL(upstream.base + target, encoded=True),
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                )
            except TimeoutError:  # includes aiohttp's connect/read timeouts
                if streamed is not None and streamed.gone:
                    upstream.release()
                    return
                upstream.failure()
                UPSTREAM_ERRORS.labels(pool.name, "timeout").inc()
                await send_error(
                    send,
                    504,
                    "GATEWAY_TIMEOUT",
                    f"The {pool.name} service did not answer in time",
                    limit_headers,
                )
                return
            except (aiohttp.ClientError, OSError, ClientGone) as exc:
                if isinstance(exc, ClientGone) or (streamed is not None and streamed.gone):
                    upstream.release()
                    return
                upstream.failure()
                UPSTREAM_ERRORS.labels(pool.name, "connect").inc()
                if retryable and len(tried) < 2:
                    tried = (*tried, upstream)
                    continue
                await send_error(
                    send,
                    502,
                    "BAD_GATEWAY",
                    f"The {pool.name} service could not be reached",
                    limit_headers,
                )
                return
            except BaseException:  # cancelled (shutdown, client gone): free a half-open probe
                upstream.release()
                raise
            upstream.success()
            await self._relay(send, method, response, limit_headers, pool.name)
            return

    async def _relay(
        self,
        send: Send,
        method: str,
        response: aiohttp.ClientResponse,
        limit_headers: list[tuple[bytes, bytes]],
        service: str,
    ) -> None:
        started = False
        try:
            headers: list[tuple[bytes, bytes]] = []
            connection: bytes | None = None
            for name, value in response.raw_headers:
                lower = name.lower()
                if lower in _RESPONSE_DROP:
                    if lower == b"connection":
                        connection = value
                    continue
                headers.append((lower, value))
            if connection is not None:
                tokens = {t.strip().lower() for t in connection.split(b",")}
                headers = [(k, v) for k, v in headers if k not in tokens]
            headers.extend(limit_headers)
            status = response.status
            length = response.content_length
            if (
                method == "HEAD"
                or status in _NO_BODY_STATUS
                or (length is not None and length <= SMALL_BODY)
            ):
                data = await response.read()
                started = True
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": data})
                return
            started = True
            await send({"type": "http.response.start", "status": status, "headers": headers})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            UPSTREAM_ERRORS.labels(service, "response").inc()
            if not started:
                timeout = isinstance(exc, asyncio.TimeoutError)
                await send_error(
                    send,
                    504 if timeout else 502,
                    "GATEWAY_TIMEOUT" if timeout else "BAD_GATEWAY",
                    f"The {service} service did not answer in time"
                    if timeout
                    else f"The {service} service could not be reached",
                    limit_headers,
                )
                return
            # Mid-body: the status is already out; end the response unfinished so the
            # server closes the connection and the client sees a truncated body.
            log.warning("upstream response interrupted", service=service, error=type(exc).__name__)
        finally:
            response.release()


def _drop_connection_tokens(
    headers: list[tuple[str, str]], connection: bytes
) -> list[tuple[str, str]]:
    tokens = {t.strip().lower() for t in connection.decode("latin-1").split(",")}
    return [(k, v) for k, v in headers if k not in tokens]


class ProxyMiddleware:
    """Sends `/api/**` to the proxy and everything else (health, docs, metrics, and the
    `/api/` paths the gateway serves itself: `local`) to the app."""

    def __init__(self, app: ASGIApp, proxy: Proxy, local: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.proxy = proxy
        self.local = local

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith("/api/")
            and scope["path"] not in self.local
        ):
            await self.proxy(scope, receive, send)
        else:
            await self.app(scope, receive, send)
