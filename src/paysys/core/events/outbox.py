"""The outbox writer: every event enters the outbox here, inside the caller's transaction.

Nothing is sent before the transaction commits (the relay only sees committed rows) and
nothing is lost after it (the row stays until Redis acknowledged it).

One envelope builder (`envelope`: catalogue validation, source, correlation and actor ids) serves
both ways of writing:
- `emit` adds the row through a SQLAlchemy session (the ORM services);
- `OutboxRows` + `insert_sql` put the rows into a plain-SQL statement of the caller (asyncpg hot
  paths), so a change, its events and the relay's wake-up travel in one round trip.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.core import context
from paysys.core.events.catalogue import validate_data
from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.models import OutboxEvent

# Relays LISTEN on this channel; NOTIFY is delivered only at commit, so it never runs early.
NOTIFY_CHANNEL = "paysys_outbox"
# The same wake-up as a SQL expression, for plain-SQL statements that write outbox rows.
NOTIFY_SQL = f"pg_notify('{NOTIFY_CHANNEL}', '')"


def envelope(
    type: str,
    data: dict[str, Any],
    *,
    actor_id: uuid.UUID | str | None = None,
    source: str | None = None,
    version: int = 1,
) -> EventEnvelope:
    """The envelope of event `type` raised by this process for the current request.

    `data` is validated against the catalogue (`UnknownEventType` for a type/version that is
    not in events.md, a pydantic `ValidationError` for a wrong shape or a secret-looking key).
    """
    validate_data(type, version, data)
    return EventEnvelope(
        type=type,
        version=version,
        source=source or f"{context.service_name()}-service",
        correlation_id=context.request_id_var.get(),
        actor_id=str(actor_id) if actor_id is not None else None,
        data=data,
    )


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

    Returns the envelope (its `id` is the event id consumers see); see `envelope` for the
    validation."""
    event = envelope(type, data, actor_id=actor_id, source=source, version=version)
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


@dataclass(slots=True)
class OutboxRows:
    """Outbox rows for a plain-SQL statement: three parallel arrays, bound to the placeholders
    given to `insert_sql` (event ids, types, payloads as JSON text)."""

    ids: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    payloads: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls, events: Iterable[tuple[str, dict[str, Any]]], *, actor_id: object | None
    ) -> OutboxRows:
        """The rows of `(type, data)` events raised by one actor (None: the system)."""
        rows = cls()
        actor = str(actor_id) if actor_id is not None else None
        for type_, data in events:
            event = envelope(type_, data, actor_id=actor)
            rows.ids.append(str(event.id))
            rows.types.append(event.type)
            rows.payloads.append(_dumps(event.to_wire()))
        return rows


def insert_sql(
    ids: str, types: str, payloads: str, *, payload: str = "e.payload", join: str = ""
) -> str:
    """`INSERT INTO outbox` of the `OutboxRows` bound at placeholders `ids`, `types`,
    `payloads` (e.g. `$10`), written as a CTE body of the caller's statement so a change and
    its events commit together. Add `NOTIFY_SQL` to the statement to wake the relays.

    Each row is `e(id, type, payload)`. A statement that completes its events with what only
    the database knows passes `payload`, a jsonb expression over `e.payload`, and `join`, the
    relations it reads (cross-joined: when one is empty, no event is written)."""
    rows = f"unnest({ids}::uuid[], {types}::text[], {payloads}::jsonb[]) AS e(id, type, payload)"
    joined = f", {join}" if join else ""
    return (
        f"INSERT INTO outbox (id, type, payload) SELECT e.id, e.type, {payload} "  # noqa: S608 - SQL fragments of fixed statements
        f"FROM {rows}{joined}"
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
