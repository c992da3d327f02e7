"""The studio's Starlette app and its start-up checks (`paysys db studio` serves it)."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from paysys.auth.throttle import Throttles
from paysys.core.clientip import TrustedProxies
from paysys.core.config import Settings
from paysys.core.db import create_engine, create_sessionmaker
from paysys.core.redis import create_redis
from paysys.core.tokens import now_ms
from paysys.db.studio import views
from paysys.db.studio.auth import COOKIE
from paysys.db.studio.tables import table_views

DEFAULT_PORT = 5555
SESSION_MAX_AGE = 8 * 3600  # seconds: a working day, then sign in again
TEMPLATES = Path(__file__).parent / "templates"
# Pages are never cached, framed or sniffed; scripts and styles only from the page itself.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


class StudioRefused(RuntimeError):
    """The configuration does not allow the studio to start."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_allowed(settings: Settings) -> None:
    if settings.is_production and not settings.studio_enabled:
        raise StudioRefused(
            "the database studio is off in production: set STUDIO_ENABLED=true to start it"
        )


def secure_cookie(settings: Settings, host: str) -> bool:
    """Secure (HTTPS only) unless a developer runs it on their own machine: in production, or
    bound to any non-loopback address, the browser sends the cookie over TLS only."""
    return settings.is_production or not is_loopback(host)


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return views.render(request, "error.html", exc.status_code, message=exc.detail)


def create_app(settings: Settings | None = None, host: str = "127.0.0.1") -> Starlette:
    settings = settings or Settings()
    check_allowed(settings)
    engine = create_engine(settings)
    redis = create_redis(settings.redis_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await redis.aclose()
        await engine.dispose()

    async def headers(request: Request, call_next: views.Page) -> Response:
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    session = Middleware(
        SessionMiddleware,
        secret_key=settings.studio_session_secret,
        session_cookie=COOKIE,
        max_age=SESSION_MAX_AGE,
        same_site="strict",
        https_only=secure_cookie(settings, host),
    )
    routes = [
        Route("/", views.index),
        Route("/login", views.login_page, methods=["GET", "POST"]),
        Route("/logout", views.logout, methods=["POST"]),
        Route("/tables/{table}", views.table_page),
        Route("/tables/{table}/row", views.row_page),
        Route("/tables/{table}/edit", views.edit_page, methods=["GET", "POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=headers), session],
        exception_handlers={HTTPException: _error},
        lifespan=lifespan,
    )
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["query"] = urlencode
    sessionmaker = create_sessionmaker(engine)
    app.state.settings = settings
    app.state.templates = templates
    app.state.views = table_views()
    app.state.sessionmaker = sessionmaker
    app.state.trusted_proxies = TrustedProxies(settings.trusted_proxies)
    app.state.throttles = Throttles.from_settings(redis, sessionmaker, settings, now_ms)
    return app
