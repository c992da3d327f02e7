"""The profile service's ASGI app (`uvicorn paysys.profile.app:create_app --factory`)."""

from __future__ import annotations

from fastapi import FastAPI

from paysys.core.config import Settings
from paysys.core.http import create_service_app
from paysys.profile.api import public_router, router
from paysys.profile.consumers import ProfileConsumer


def create_app(settings: Settings | None = None) -> FastAPI:
    consumer = ProfileConsumer()
    app = create_service_app(
        "profile",
        [router, public_router],
        settings=settings,
        handlers=consumer.handlers,
        workers=[consumer.bind],
        description="Profiles and preferences of paysys users (api-contracts §6).",
    )
    app.state.profile_consumer = consumer
    return app
