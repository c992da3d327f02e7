"""The payments service's ASGI app (`uvicorn paysys.payments.app:create_app --factory`)."""

from __future__ import annotations

from fastapi import FastAPI

from paysys.core.config import Settings, get_settings
from paysys.core.events.consumer import EventHandlers
from paysys.core.http import create_service_app
from paysys.core.runtime import Worker
from paysys.payments.api import router
from paysys.payments.limits import AmountLimits
from paysys.payments.processor import ProcessorWorker, WebhookSender, idempotency_janitor

CONSUMER = "payments"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    limits = AmountLimits()
    handlers = EventHandlers(CONSUMER)
    handlers.on("config.updated")(limits.on_config_updated)

    def sender() -> WebhookSender | None:
        # Tests may install `app.state.webhook_sender` (e.g. an in-process ASGI client).
        return getattr(app.state, "webhook_sender", None)

    workers: list[Worker] = [idempotency_janitor]
    processor = None
    if settings.payments_processor == "simulated":
        processor = ProcessorWorker(sender=sender)
        workers.append(processor)
    app = create_service_app(
        "payments",
        [router],
        settings=settings,
        workers=workers,
        handlers=handlers,
        description="Payments: idempotent creation, status machine, processor, webhooks, "
        "reports (api-contracts §4).",
    )
    app.state.payment_limits = limits
    app.state.payment_processor = processor
    return app
