"""The API gateway's ASGI app: a lean Starlette app (no FastAPI on the hot path)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from paysys.core.config import Settings, get_settings
from paysys.core.health import HealthChecks
from paysys.core.logging import configure_logging
from paysys.core.metrics import metrics_endpoint
from paysys.core.middleware import CatchAllMiddleware, CORSMiddleware, RequestContextMiddleware
from paysys.core.redis import create_redis


def create_app(settings: Settings | None = None) -> Starlette:
    settings = (settings or get_settings()).model_copy(update={"service_name": "gateway"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        configure_logging("gateway", settings.log_level, json_output=settings.is_production)
        app.state.redis = create_redis(settings.redis_url)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    async def redis_check() -> None:
        await app.state.redis.ping()

    health = HealthChecks(
        "gateway", timeout=settings.health_timeout, required={"redis": redis_check}
    )
    routes = [*health.routes(), Route("/metrics", metrics_endpoint, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.settings = settings
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(CORSMiddleware, origins=settings.cors_origins)
    app.add_middleware(RequestContextMiddleware, service="gateway")
    return app
