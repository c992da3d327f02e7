"""The API gateway's ASGI app: a lean Starlette app (no FastAPI on the hot path).

Middleware, outermost first: RequestContext (request id, security headers, access log,
metrics) → CORS (preflight answered before anything else; headers on every response, the
gateway's own errors included) → CatchAll → BodyLimit (413 before anything is forwarded) →
TrailingSlash (`/x/` served as `/x`, never redirected) → ProxyMiddleware (`/api/**` → the
proxy, except `/api/events/stream`) → the Starlette router (health, docs, OpenAPI, metrics,
and the real-time endpoints `/ws` and `/api/events/stream` of `gateway.realtime`). WebSocket
scopes pass the HTTP middleware by; the realtime endpoints add what they need themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from paysys.core.allow import allow_value
from paysys.core.config import Settings, get_settings
from paysys.core.context import set_service_name
from paysys.core.envelope import error_bytes
from paysys.core.health import HealthChecks
from paysys.core.logging import configure_logging, get_logger
from paysys.core.metrics import metrics_endpoint
from paysys.core.middleware import (
    BodyLimitMiddleware,
    CatchAllMiddleware,
    CORSMiddleware,
    RequestContextMiddleware,
    TrailingSlashMiddleware,
    route_body_limits,
)
from paysys.core.redis import create_redis
from paysys.core.runtime import on_shutdown_drain
from paysys.gateway.openapi import OpenAPIAggregator, docs_endpoint
from paysys.gateway.proxy import Proxy, ProxyMiddleware
from paysys.gateway.ratelimit import RateLimiter
from paysys.gateway.realtime.service import SSE_PATHS, Realtime, not_found
from paysys.gateway.upstreams import ServicePool, Upstream, build_pools, set_ready

log = get_logger("paysys.gateway")


class ServiceDown(Exception):
    """No URL of a service answered its readiness probe."""


class Gateway:
    """Everything the gateway process holds: pools, proxy, OpenAPI cache, probe task."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pools: dict[str, ServicePool] = build_pools(
            settings.service_urls(),
            threshold=settings.circuit_failure_threshold,
            open_seconds=settings.circuit_open_seconds,
        )
        self.proxy = Proxy(settings, self.pools)
        self.openapi = OpenAPIAggregator(
            self.pools,
            ttl=settings.openapi_cache_ttl,
            timeout=settings.health_timeout,
            on_methods=self.proxy.set_methods,
        )
        self.probe_timeout = aiohttp.ClientTimeout(total=settings.health_timeout)
        self.realtime = Realtime(settings, self.proxy.tokens, self.proxy.address)
        self.redis: Any = None
        self.limiter: RateLimiter | None = None
        self._prober: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.redis = create_redis(self.settings.redis_url)
        self.limiter = RateLimiter(self.redis, url=self.settings.redis_url)
        session = self.proxy.start(self.limiter)
        self.openapi.session = session
        self.realtime.start(self.redis, self.limiter, session, self.pools["payments"])
        self._prober = asyncio.create_task(self._probe_loop(), name="gateway-upstream-probe")

    async def stop(self) -> None:
        await self.realtime.stop()
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        await self.proxy.stop()
        if self.limiter is not None:
            self.limiter.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def probe(self, upstream: Upstream) -> bool:
        """Active health: GET /health/ready on one URL (2 s)."""
        session = self.proxy.session
        assert session is not None
        try:
            async with session.get(
                upstream.base + "/health/ready", timeout=self.probe_timeout
            ) as response:
                await response.read()
                ready = response.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            ready = False
        if set_ready(upstream, ready):
            log.info("upstream ready again", service=upstream.service, upstream=upstream.base)
            self.openapi.invalidate()  # it may have restarted with a new document
        return ready

    async def probe_all(self) -> None:
        upstreams = [u for pool in self.pools.values() for u in pool.upstreams]
        await asyncio.gather(*(self.probe(u) for u in upstreams))

    async def _probe_loop(self) -> None:
        interval = self.settings.upstream_probe_interval
        while True:
            try:
                await self.probe_all()
            except Exception:  # pragma: no cover - a probe never raises; keep looping anyway
                log.exception("upstream probe failed")
            try:
                # Keeps the merged document, hence the proxy's method table (405s), current:
                # re-fetched after OPENAPI_CACHE_TTL, or at once when a service came back.
                await self.openapi.document()
            except Exception:  # pragma: no cover - a bad document must not stop the probes
                log.exception("openapi refresh failed")
            await asyncio.sleep(interval)

    def service_check(self, name: str) -> Any:
        """A service is up when one of its URLs is ready. Its instances are listed by position
        in `*_SERVICE_URL` (circuit, ready), never by address: this is a public response."""
        pool = self.pools[name]

        async def check() -> dict[str, Any]:
            results = await asyncio.gather(*(self.probe(u) for u in pool.upstreams))
            if not any(results):
                raise ServiceDown(name)
            return {"instances": [u.snapshot() for u in pool.upstreams]}

        return check

    async def serving_check(self) -> None:
        """The gateway's own ability to serve: its upstream client is open (not before start,
        not after stop). Upstreams and Redis are optional checks: one service down never makes
        the gateway unready (its routes answer 502/503 by themselves), Redis down degrades it."""
        session = self.proxy.session
        if session is None or session.closed:
            raise ServiceDown("gateway")

    async def redis_check(self) -> None:
        await self.redis.ping()


async def _http_error(_: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    code, message = (
        ("METHOD_NOT_ALLOWED", "Method not allowed")
        if status == 405
        else ("NOT_FOUND", "Route not found")
    )
    headers = dict(getattr(exc, "headers", None) or {})
    if "Allow" in headers:  # on a 405 (§1.4), in the one order (Starlette's is a set's)
        headers["Allow"] = allow_value(headers["Allow"].split(", "))
    return Response(
        error_bytes(code, message), status, headers=headers, media_type="application/json"
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = (settings or get_settings()).model_copy(update={"service_name": "gateway"})
    set_service_name("gateway")
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        configure_logging("gateway", settings.log_level, json_output=settings.is_production)
        await gateway.start()
        app.state.redis = gateway.redis
        unregister = on_shutdown_drain(gateway.realtime.drain)
        try:
            yield
        finally:
            unregister()
            await gateway.stop()

    optional: dict[str, Any] = {"redis": gateway.redis_check}
    optional.update({name: gateway.service_check(name) for name in gateway.pools})
    health = HealthChecks(
        "gateway",
        timeout=settings.health_timeout,
        required={"gateway": gateway.serving_check},
        optional=optional,
        cache_seconds=settings.health_cache_seconds,
    )
    routes = [
        *health.routes(),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", gateway.openapi.endpoint, methods=["GET"]),
        Route("/docs", docs_endpoint, methods=["GET"]),
        *gateway.realtime.routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.router.redirect_slashes = False  # TrailingSlashMiddleware serves `/x/` as `/x`
    app.state.settings = settings
    app.state.gateway = gateway
    app.state.health = health
    fallback = app.router.default
    app.router.default = functools.partial(not_found, fallback=fallback)
    app.add_middleware(ProxyMiddleware, proxy=gateway.proxy, local=frozenset(SSE_PATHS))
    app.add_middleware(TrailingSlashMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        routes=route_body_limits(settings.profile_max_body_bytes),
        disconnect=True,  # the proxy may be forwarding already: answer here, drop its answer
    )
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(CORSMiddleware, origins=settings.cors_origins)
    app.add_middleware(RequestContextMiddleware, service="gateway", proxies=gateway.proxy.address)
    return app
