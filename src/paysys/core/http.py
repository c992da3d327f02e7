"""The app factory every service uses: lifespan, middleware, one error handler, health, metrics."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.routing import Route

from paysys import __version__
from paysys.core.allow import METHOD_ORDER, allow_value
from paysys.core.clientip import TrustedProxies
from paysys.core.config import Settings, get_settings
from paysys.core.context import set_service_name
from paysys.core.docs import docs_route
from paysys.core.envelope import error_body
from paysys.core.errors import STATUS_BY_CODE, AppError, NotFound
from paysys.core.events.consumer import EventHandlers
from paysys.core.events.relay import run_relay
from paysys.core.health import Check, HealthChecks
from paysys.core.jsonbody import INVALID_JSON_MESSAGE
from paysys.core.logging import configure_logging
from paysys.core.metrics import metrics_endpoint
from paysys.core.middleware import (
    BodyLimitMiddleware,
    CatchAllMiddleware,
    CORSMiddleware,
    RequestContextMiddleware,
    TrailingSlashMiddleware,
    route_body_limits,
)
from paysys.core.openapi import install_error_docs
from paysys.core.revocation import db_revocation_fallback
from paysys.core.routing import JsonBodyRoute, PlainRoute
from paysys.core.runtime import Runtime, Worker

_CODE_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMIT_EXCEEDED",
    503: "SERVICE_UNAVAILABLE",
}
_MESSAGE_BY_STATUS = {
    404: "Route not found",
    405: "Method not allowed",
}


def error_response(error: AppError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, error.details),
        status_code=error.status,
        headers=error.headers,
    )


def _field_path(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _rule_message(err: dict[str, Any]) -> str:
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    if err.get("type") == "missing":
        return "is required"
    msg = str(err.get("msg", "is invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg[:1].lower() + msg[1:]


def validation_error(exc: RequestValidationError) -> AppError:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return AppError("INVALID_JSON", INVALID_JSON_MESSAGE)
    details = [
        {"field": _field_path(e.get("loc", ())), "message": _rule_message(e)} for e in errors
    ]
    first = details[0] if details else {"field": "body", "message": "is invalid"}
    return AppError("VALIDATION_ERROR", f"{first['field']}: {first['message']}", details=details)


def install_error_handlers(app: FastAPI) -> None:
    async def on_app_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        return error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _CODE_BY_STATUS.get(exc.status_code, "INTERNAL_ERROR")
        message = _MESSAGE_BY_STATUS.get(exc.status_code) or str(exc.detail)
        err = AppError(code, message)
        response = error_response(err)
        response.status_code = exc.status_code if code != "INTERNAL_ERROR" else 500
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            response.headers["allow"] = path_allow(request, (exc.headers or {}).get("Allow", ""))
        return response

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


def path_allow(request: Request, own: str) -> str:
    """`Allow` of a 405 (api-contracts §1.4, `core.allow`): the methods the app's OpenAPI
    document declares under the path template the router picked (Starlette's own header, `own`,
    names only the first route of a path, e.g. `GET` on a GET + POST path). A route outside
    the document (health, metrics) keeps its own methods, in the one order."""
    route = request.scope.get("route")
    item = request.app.openapi().get("paths", {}).get(getattr(route, "path", None))
    if isinstance(item, dict):
        return allow_value(method for method in item if method.upper() in METHOD_ORDER)
    return allow_value(method.strip() for method in own.split(",") if method.strip())


def parse_uuid(value: str, code: str = "NOT_FOUND", message: str = "Not found") -> uuid.UUID:
    """Path ids that are not UUIDs are simply absent resources (404), never a 500."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(code, message) from None


def database_checks(
    runtime_getter: Callable[[], Runtime],
) -> tuple[dict[str, Check], dict[str, Check]]:
    """→ (required, optional) readiness checks of a service (api-contracts §7): without its
    database a service cannot serve; without Redis it still does (limits fail open, revocation
    falls back to the database), so Redis down is `degraded`, not unready."""

    async def database() -> None:
        async with runtime_getter().engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await runtime_getter().redis.ping()

    return {"database": database}, {"redis": redis}


def check_route_classes(router: APIRouter) -> None:
    """Every API route of a service reads its body with the one reader: a `JsonBodyRoute`
    (FastAPI parses through `core.jsonbody`) or a `PlainRoute` (the endpoint calls
    `core.jsonbody.read_json`). A router made without `route_class=JsonBodyRoute` would
    silently fall back to Starlette's `json.loads`, so it is refused at build time."""
    for route in router.routes:
        if isinstance(route, APIRoute) and not isinstance(route, JsonBodyRoute | PlainRoute):
            raise TypeError(
                f"route {route.path} is a {type(route).__name__}; create its router with "
                "route_class=JsonBodyRoute"
            )


def create_service_app(
    service: str,
    routers: Sequence[APIRouter],
    *,
    settings: Settings | None = None,
    workers: Sequence[Worker] = (),
    description: str = "",
    handlers: EventHandlers | None = None,
) -> FastAPI:
    """A FastAPI app with everything a paysys service shares. Each service adds its routers.

    Background workers (off with BACKGROUND_WORKERS=false): the outbox relay (every process),
    this service's event consumer when `handlers` has any, then `workers`. The same list is
    `app.state.workers`, which `paysys worker <service>` runs without HTTP.
    """
    settings = settings or get_settings()
    settings = settings.model_copy(update={"service_name": service})
    set_service_name(service)
    all_workers: list[Worker] = [run_relay]
    if handlers:
        all_workers.append(handlers.run)
    all_workers.extend(workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(service, settings.log_level, json_output=settings.is_production)
        runtime = Runtime.create(settings)
        app.state.runtime = runtime
        app.state.sessionmaker = runtime.sessionmaker
        app.state.redis = runtime.redis
        app.state.hot_redis = runtime.hot_redis
        if settings.background_workers:
            runtime.start_workers(all_workers)
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(
        title=f"paysys {service}",
        version=__version__,
        description=description,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,  # core.docs: pinned Swagger UI assets
        redoc_url=None,
        redirect_slashes=False,  # a redirect would name this service's address (§2.1)
    )
    install_error_docs(app)  # the real 400 instead of FastAPI's 422, error envelope documented
    app.state.settings = settings
    app.state.workers = all_workers
    app.state.event_handlers = handlers
    # Redis down: every service decides revocation from the database (core.revocation).
    app.state.revocation_fallback = db_revocation_fallback
    install_error_handlers(app)
    app.router.route_class = JsonBodyRoute
    # One TRUSTED_PROXIES rule for the request context (logs) and `core.clientip.client_ip`.
    app.state.trusted_proxies = proxies = TrustedProxies(settings.trusted_proxies)
    required, optional = database_checks(lambda: app.state.runtime)
    health = HealthChecks(
        service,
        timeout=settings.health_timeout,
        required=required,
        optional=optional,
        cache_seconds=settings.health_cache_seconds,
    )
    app.state.health = health
    for route in health.routes():
        app.router.routes.append(route)
    app.router.routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    app.router.routes.append(Route("/docs", docs_route(app.title), methods=["GET"]))
    for router in routers:
        check_route_classes(router)
        app.include_router(router)
    # Added innermost first; RequestContext ends up outermost.
    app.add_middleware(TrailingSlashMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        routes=route_body_limits(settings.profile_max_body_bytes),
    )
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(CORSMiddleware, origins=settings.cors_origins)
    app.add_middleware(RequestContextMiddleware, service=service, proxies=proxies)
    return app


__all__ = ["STATUS_BY_CODE", "create_service_app", "error_response", "parse_uuid"]
