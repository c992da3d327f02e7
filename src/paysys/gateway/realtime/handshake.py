"""Who may open a real-time connection: the checks of api-contracts §9.1, shared by the
WebSocket and SSE endpoints, all made before anything is accepted or streamed.

Order: Origin (403) → draining or process cap (503) → token (401, pure CPU) → one Redis round
trip for the handshake rate per client IP and the token's revocation marks (the gateway's rate
limiter and Lua script, so the same store as the HTTP edge: 429 / 401) → the user's connection
cap across replicas (429). A refused handshake holds nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from starlette.types import Scope

from paysys.core.clientip import TrustedProxies, client_key, resolve_scope
from paysys.core.errors import AppError
from paysys.core.logging import get_logger, redact_text
from paysys.core.middleware import REQUEST_ID_RE, header
from paysys.core.tokens import Principal, VerifiedTokens, bearer_token
from paysys.gateway.ratelimit import Policy, RateLimiter
from paysys.gateway.realtime import metrics
from paysys.gateway.realtime.limits import HANDSHAKE_POLICY, ConnectionCounter

USER_CAP_RETRY_AFTER = b"10"

log = get_logger("paysys.gateway.realtime")


def target_for_log(scope: Scope) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    return redact_text(f"{scope['path']}?{query}") if query else str(scope["path"])


@dataclass(slots=True)
class Refusal(Exception):
    """A handshake answered with an HTTP error instead of an upgrade or a stream."""

    status: int
    code: str
    message: str
    reason: str  # the metrics label
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def log(self, transport: str, path: str) -> None:
        """One line per refused handshake (§9.9), the same for both transports."""
        log.info(
            "realtime refused", transport=transport, path=path, status=self.status, code=self.code
        )


@dataclass(slots=True)
class Admission:
    principal: Principal
    token: str
    connection_id: str
    client_ip: str
    slot: str


def request_id(scope: Scope) -> str:
    """The client's X-Request-ID when valid (it becomes the connection id), else a new one."""
    incoming = header(scope, b"x-request-id")
    return incoming if incoming and REQUEST_ID_RE.match(incoming) else str(uuid.uuid4())


def query_param(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


@dataclass(kw_only=True, eq=False)
class Gatekeeper:
    """Who may open a real-time connection (§9.1): origin, token, caps, rate limit."""

    origins: frozenset[str]
    tokens: VerifiedTokens
    address: TrustedProxies
    max_connections: int
    open_count: Callable[[], int]  # open + being admitted (this one too), this process
    user_count: Callable[[str], int]  # this process's connections of that user
    limiter: RateLimiter | None = None
    counter: ConnectionCounter | None = None
    handshake_policy: Policy = HANDSHAKE_POLICY
    draining: bool = False

    def client_ip(self, scope: Scope) -> str:
        """The client, by the one rule of `core.clientip` (WebSocket scopes included)."""
        return resolve_scope(scope, self.address).ip

    def _authorization(self, scope: Scope) -> str:
        authorization = header(scope, b"authorization")
        if authorization:
            return authorization
        token = query_param(scope, "token")
        if not token:
            raise AppError("UNAUTHORIZED", "Missing access token (?token= or Authorization)")
        return "Bearer " + token

    async def admit(self, scope: Scope, connection_id: str, slot: str) -> Admission:
        """Every check of §9.1; raises `Refusal`. On success the user's slot is taken: the
        caller releases it (`counter.release`) when the connection ends."""
        try:
            return await self._admit(scope, connection_id, slot)
        except Refusal as refusal:
            metrics.HANDSHAKES_REJECTED.labels(refusal.reason).inc()
            raise

    async def _admit(self, scope: Scope, connection_id: str, slot: str) -> Admission:
        origin = header(scope, b"origin")
        if origin is not None and origin not in self.origins:
            raise Refusal(403, "FORBIDDEN", "Origin not allowed", "origin")
        if self.draining:
            raise Refusal(
                503,
                "SERVICE_UNAVAILABLE",
                "Shutting down, reconnect",
                "draining",
                [(b"retry-after", b"1")],
            )
        if self.open_count() > self.max_connections:  # this handshake included
            raise Refusal(
                503,
                "SERVICE_UNAVAILABLE",
                "Too many connections, retry later",
                "process_cap",
                [(b"retry-after", b"5")],
            )
        try:
            authorization = self._authorization(scope)
            # Not through the verified-token cache: a connection checks its token once, and
            # a cache entry per open socket would cost memory for nothing.
            principal = self.tokens.codec.decode_access(bearer_token(authorization))
        except AppError as error:
            raise Refusal(error.status, error.code, error.message, error.code.lower()) from None
        assert self.limiter is not None and self.counter is not None
        ip = self.client_ip(scope)
        decision = await self.limiter.hit("rt:" + client_key(ip), self.handshake_policy, principal)
        if decision.revoked:
            raise Refusal(401, "TOKEN_INVALID", "Token has been revoked", "revoked")
        if not decision.allowed:
            raise Refusal(
                429,
                "RATE_LIMIT_EXCEEDED",
                "Too many handshakes, retry later",
                "ip_rate",
                decision.headers(),
            )
        user_id = str(principal.id)
        local = self.user_count(user_id)
        if not await self.counter.acquire(user_id, slot, local):
            raise Refusal(
                429,
                "RATE_LIMIT_EXCEEDED",
                "Too many open connections for this user",
                "user_cap",
                [(b"retry-after", USER_CAP_RETRY_AFTER)],
            )
        return Admission(principal, bearer_token(authorization), connection_id, ip, slot)
