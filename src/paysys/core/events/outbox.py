"""`emit`: write an event into the outbox inside the caller's transaction.

Nothing is sent before the transaction commits (the relay only sees committed rows) and
nothing is lost after it (the row stays until Redis acknowledged it).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.core import context
from paysys.core.events.catalogue import validate_data
from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.models import OutboxEvent

# Relays LISTEN on this channel; NOTIFY is delivered only at commit, so it never runs early.
NOTIFY_CHANNEL = "paysys_outbox"


async def emit(
    session: AsyncSession,
    type: str,
    data: dict[str, Any],
    *,
    actor_id: uuid.UUID | str | None = None,
    source: str | None = None,
    version: int = 1,
) -> EventEnvelope:
    """Add event `type` to the caller's transaction (published by the relay after commit).

    `data` is validated against the catalogue (`UnknownEventType` for a type/version that is
    not in events.md, a pydantic `ValidationError` for a wrong shape or a secret-looking key).
    Returns the envelope (its `id` is the event id consumers see).
    """
    validate_data(type, version, data)
    event = EventEnvelope(
        type=type,
        version=version,
        source=source or f"{context.service_name()}-service",
        correlation_id=context.request_id_var.get(),
        actor_id=str(actor_id) if actor_id is not None else None,
        data=data,
    )
    await session.execute(
        insert(OutboxEvent).values(id=event.id, type=event.type, payload=event.to_wire())
    )
    # One NOTIFY per transaction is enough (PostgreSQL folds duplicates anyway): save the trip.
    # (The transaction object itself is kept, not its id(): ids are reused after GC.)
    transaction = session.get_transaction()
    if transaction is None or session.info.get("paysys_outbox_notified") is not transaction:
        await session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        session.info["paysys_outbox_notified"] = transaction
    return event
