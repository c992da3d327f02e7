"""The admin service's ASGI app (`uvicorn paysys.admin.app:create_app --factory`)."""

from __future__ import annotations

from fastapi import FastAPI

from paysys.admin.api import router
from paysys.admin.consumer import handlers
from paysys.core.config import Settings
from paysys.core.http import create_service_app

DESCRIPTION = (
    "User management, audit trail (built from events), statistics, system health and "
    "configuration. Every route requires a Bearer token with role ADMIN."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "admin", [router], settings=settings, handlers=handlers, description=DESCRIPTION
    )
