"""The profile service's ASGI app (`uvicorn paysys.profile.app:create_app --factory`)."""

from __future__ import annotations

from fastapi import FastAPI

from paysys.core.config import Settings
from paysys.core.http import create_service_app
from paysys.profile.api import router


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app("profile", [router], settings=settings)
