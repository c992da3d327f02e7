"""The real-time feature of one gateway process: routes, stream reader, revocation checks,
limits and shutdown, around the hub.

Lifecycle: `Gateway.start` → `start()` (the stream reader task and the 60 s revocation sweep);
SIGTERM → `drain()` (`paysys.cli.serve.DrainingServer`, before uvicorn closes its connections:
new handshakes get 503 and every open connection is closed with 1001); lifespan shutdown →
`stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import time
import weakref
from collections.abc import Awaitable, Iterable
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from paysys.core.clientip import TrustedProxies
from paysys.core.config import Settings
from paysys.core.context import request_id_var
from paysys.core.logging import get_logger
from paysys.core.redis import HotPathRedis
from paysys.core.revocation import is_revoked
from paysys.core.tasks import cancel_and_wait
from paysys.core.tokens import VerifiedTokens
from paysys.gateway.ratelimit import RateLimiter
from paysys.gateway.realtime import metrics
from paysys.gateway.realtime.handshake import Admission, Gatekeeper, Refusal, request_id
from paysys.gateway.realtime.hub import GOING_AWAY, Connection, Hub
from paysys.gateway.realtime.limits import ConnectionCounter
from paysys.gateway.realtime.lookup import PaymentLookup
from paysys.gateway.realtime.messages import BROADCAST_ROOM
from paysys.gateway.realtime.sse import EventStreamEndpoint
from paysys.gateway.realtime.stream import StreamReader, create_stream_client
from paysys.gateway.realtime.ws import UpgradeRequired, WebSocketConnection, WebSocketEndpoint, deny
from paysys.gateway.upstreams import ServicePool

log = get_logger("paysys.gateway.realtime")

WS_PATHS = ("/ws", "/ws/")
SSE_PATHS = ("/api/events/stream", "/api/events/stream/")
SWEEP_INTERVAL = 60.0
DRAIN_TIMEOUT = 3.0  # within the pod's shutdown budget (docs/operations.md §6)
RECHECK_CHUNK = 500


class Realtime:
    def __init__(self, settings: Settings, tokens: VerifiedTokens, address: TrustedProxies) -> None:
        self.settings = settings
        self.hub = Hub()
        self.hub.on_revocation = self.recheck_user
        self.gate = Gatekeeper(
            origins=frozenset(settings.cors_origins),
            tokens=tokens,
            address=address,
            max_connections=settings.realtime_max_connections,
            open_count=lambda: len(self.hub.connections) + self.admitting,
            user_count=self.hub.count_user,
        )
        self.lookup = PaymentLookup(settings.upstream_timeout)
        self.sweep_interval = SWEEP_INTERVAL
        self.stream_block_ms = 5000
        self.admitting = 0
        self.counter: ConnectionCounter | None = None
        self.revocations: HotPathRedis | None = None
        self.stream_redis: Redis | None = None
        self.reader: StreamReader | None = None
        self._expiries: list[tuple[int, int, weakref.ref[Connection]]] = []  # a heap
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._expiry_due = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._slots = itertools.count()
        self._process = os.urandom(4).hex()
        self._redis_silent = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(
        self,
        redis: Redis,
        limiter: RateLimiter,
        session: aiohttp.ClientSession,
        payments: ServicePool,
    ) -> None:
        self.counter = ConnectionCounter(redis, self.settings.realtime_max_connections_per_user)
        self.gate.limiter = limiter
        self.gate.counter = self.counter
        self.revocations = limiter.client
        self.lookup.session = session
        self.lookup.pool = payments
        self.stream_redis = create_stream_client(self.settings.redis_url, self.stream_block_ms)
        self.reader = StreamReader(
            self.stream_redis,
            self.hub.dispatch,
            block_ms=self.stream_block_ms,
            on_recovered=self.sweep_soon,
        )
        self._spawn(self.reader.run(), "realtime-stream-reader")
        self._spawn(self._sweep_loop(), "realtime-revocation-sweep")

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        self._expiries.clear()
        if self.stream_redis is not None:
            with contextlib.suppress(Exception):
                await self.stream_redis.aclose()

    async def drain(self) -> None:
        """Graceful shutdown: refuse new handshakes (503), close every connection with 1001
        and wait (at most DRAIN_TIMEOUT) until they are gone."""
        self.gate.draining = True
        connections = list(self.hub.connections)
        if not connections:
            return
        log.info("closing real-time connections for shutdown", connections=len(connections))
        for connection in connections:
            connection.close(GOING_AWAY)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await self.hub.empty.wait()

    def routes(self) -> list[BaseRoute]:
        ws = WebSocketEndpoint(self)
        sse = EventStreamEndpoint(self)
        upgrade = UpgradeRequired()
        routes: list[BaseRoute] = []
        for path in WS_PATHS:
            routes.append(WebSocketRoute(path, ws))
            routes.append(Route(path, upgrade, methods=["GET"]))
        routes.extend(Route(path, sse, methods=["GET"]) for path in SSE_PATHS)
        return routes

    # -- connections -----------------------------------------------------------------------
    async def admit(self, scope: Scope, connection_id: str) -> Admission:
        self.admitting += 1
        try:
            return await self.gate.admit(scope, connection_id, self.new_slot())
        finally:
            self.admitting -= 1

    def new_slot(self) -> str:
        """The connection's member in the per-user count (never the client's request id,
        which a client could repeat to be counted once)."""
        return f"{self._process}:{next(self._slots)}"

    def opened(self, connection: Connection) -> None:
        self.hub.add(connection)
        self._expire_at(connection)

    def closed(self, connection: Connection, code: int, duration: float) -> None:
        self.hub.remove(connection)
        metrics.CLOSED.labels(str(code)).inc()
        if self.counter is not None:
            self._spawn(self.counter.release(connection.user_id, connection.slot), "release")
        log.info(
            "realtime closed",
            transport=connection.transport,
            userId=connection.user_id,
            connectionId=connection.id,
            code=code,
            duration_s=round(duration, 3),
        )

    async def authorize_room(
        self, connection: WebSocketConnection, room: str
    ) -> tuple[str, str] | None:
        """None when `room` may be subscribed to, else the error (code, message) of §9.3."""
        if room in connection.rooms or room == BROADCAST_ROOM:
            return None
        if room.startswith("payment:"):
            visible = await self.lookup.visible(
                room[len("payment:") :], connection.token, request_id_var.get() or connection.id
            )
            if visible is None:
                return "SERVICE_UNAVAILABLE", "Cannot check the payment right now, retry later"
            return None if visible else ("PAYMENT_NOT_FOUND", "Payment not found")
        return "FORBIDDEN", "room: not allowed"

    # -- expiry: one timer for all connections (a timer per socket costs memory) ------------
    def _expire_at(self, connection: Connection) -> None:
        due = connection.principal.expires_at
        heapq.heappush(self._expiries, (due, next(self._slots), weakref.ref(connection)))
        if self._expiry_timer is None or due < self._expiry_due:
            self._arm_expiry(due)

    def _arm_expiry(self, due: float) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        self._expiry_due = due
        delay = max(0.0, due - time.time())
        self._expiry_timer = asyncio.get_running_loop().call_later(delay, self._expire_due)

    def _expire_due(self) -> None:
        self._expiry_timer = None
        now = time.time()
        while self._expiries and self._expiries[0][0] <= now:
            _, _, ref = heapq.heappop(self._expiries)
            connection = ref()
            if connection is not None and connection in self.hub.connections:
                connection.expire()
        if self._expiries:
            self._arm_expiry(self._expiries[0][0])

    # -- revocation ------------------------------------------------------------------------
    def recheck_user(self, user_id: str) -> None:
        """An event named this user (logout, password/role change, deactivation, deletion):
        check each of its connections against the revocation store now."""
        connections = self.hub.user_connections(user_id)
        if connections:
            self._spawn(self.recheck(connections), "realtime-recheck")

    async def recheck(self, connections: Iterable[Connection]) -> int:
        """Close the revoked ones (4403); returns how many. Redis down: nothing can be told,
        the next sweep tries again."""
        client = self.revocations
        if client is None:
            return 0
        chosen = list(connections)
        results = await asyncio.gather(
            *(is_revoked(client, c.principal) for c in chosen), return_exceptions=True
        )
        revoked = 0
        failed = False
        for connection, result in zip(chosen, results, strict=True):
            if result is True:
                connection.revoke()
                revoked += 1
            elif isinstance(result, BaseException):
                failed = True
        if failed and not self._redis_silent:
            log.warning("real-time revocation check skipped: Redis unavailable")
        self._redis_silent = failed
        return revoked

    async def sweep(self) -> None:
        """Every connection re-checked, and this process's per-user leases renewed."""
        connections = list(self.hub.connections)
        for start in range(0, len(connections), RECHECK_CHUNK):
            await self.recheck(connections[start : start + RECHECK_CHUNK])
        if self.counter is not None and connections:
            by_user: dict[str, list[str]] = {}
            for connection in connections:
                by_user.setdefault(connection.user_id, []).append(connection.slot)
            with contextlib.suppress(RedisError, OSError):  # leases outlive missed renewals
                await self.counter.renew(by_user.items())

    def sweep_soon(self) -> None:
        """Redis is back: connections opened meanwhile were not checked against revocation."""
        self._spawn(self.sweep(), "realtime-sweep")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except Exception:  # the sweep must keep running
                log.exception("real-time revocation sweep failed")

    def _spawn(self, work: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def not_found(scope: Scope, receive: Receive, send: Send, fallback: Any) -> None:
    """Unknown paths: a WebSocket handshake gets 404 as plain HTTP too (§9.1), not Starlette's
    default close (which a server answers with a bare 403)."""
    if scope["type"] == "websocket":
        request_id_var.set(request_id(scope))
        metrics.HANDSHAKES_REJECTED.labels("not_found").inc()
        await deny(scope, receive, send, Refusal(404, "NOT_FOUND", "Route not found", "not_found"))
        return
    await fallback(scope, receive, send)
