"""The auth service's ASGI app (`uvicorn paysys.auth.app:create_app --factory`)."""

from __future__ import annotations

from fastapi import FastAPI

from paysys.auth.api import router
from paysys.auth.workers import revocation_sync
from paysys.core.config import Settings
from paysys.core.http import create_service_app

DESCRIPTION = (
    "Accounts, JWT access/refresh tokens with rotation and instant revocation, "
    "lockout, sessions (api-contracts §3)."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "auth",
        [router],
        settings=settings,
        workers=[revocation_sync],
        description=DESCRIPTION,
    )
