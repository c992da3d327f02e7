"""Plain-SQL access for the payments hot paths (create, get, list, status changes).

A connection is borrowed from the service's SQLAlchemy pool and used through asyncpg directly:
one SQLAlchemy pool per process, no ORM or Core overhead on the paths that carry the load.
Transactions are asyncpg's own (`async with conn.transaction()`); single statements (the
create without an Idempotency-Key is one CTE) need none.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from paysys.core import context
from paysys.core.errors import ServiceUnavailable
from paysys.core.events.catalogue import validate_data
from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.outbox import NOTIFY_CHANNEL

Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

_DISCONNECTS = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)


@asynccontextmanager
async def connect(engine: AsyncEngine) -> AsyncIterator[Conn]:
    """An asyncpg connection from the engine's pool; DB unreachable → 503."""
    try:
        sa_conn = await engine.connect()
    except (DBAPIError, SQLAlchemyError, OSError) as exc:
        raise ServiceUnavailable("The database is unavailable") from exc
    driver: Conn | None = None
    try:
        raw = await sa_conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        try:
            yield driver
        except _DISCONNECTS as exc:
            await sa_conn.invalidate()
            raise ServiceUnavailable("The database is unavailable") from exc
    finally:
        # Never hand a connection back to the pool mid-transaction or broken (e.g. a request
        # cancelled while a statement ran): drop it instead.
        if (
            driver is not None
            and not sa_conn.invalidated
            and (driver.is_closed() or driver.is_in_transaction())
        ):
            await sa_conn.invalidate()
        await sa_conn.close()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def event_rows(
    events: list[tuple[str, dict[str, Any]]], actor_id: object | None
) -> tuple[list[str], list[str], list[str]]:
    """Outbox rows (ids, types, payload JSON) for `INSERT ... SELECT FROM unnest(...)`.

    The same envelope as `paysys.core.events.outbox.emit`, written by plain SQL in the
    caller's statement/transaction (so a change and its events commit together)."""
    ids: list[str] = []
    types: list[str] = []
    payloads: list[str] = []
    for type_, data in events:
        validate_data(type_, 1, data)
        envelope = EventEnvelope(
            type=type_,
            source=f"{context.service_name()}-service",
            correlation_id=context.request_id_var.get(),
            actor_id=str(actor_id) if actor_id is not None else None,
            data=data,
        )
        ids.append(str(envelope.id))
        types.append(type_)
        payloads.append(dumps(envelope.to_wire()))
    return ids, types, payloads


# A CTE fragment: insert the outbox rows of $a/$b/$c and wake relays at commit.
def outbox_cte(ids: int, types: int, payloads: int) -> str:
    placeholders = f"${ids}::uuid[], ${types}::text[], ${payloads}::text[]"
    return (
        "o AS (INSERT INTO outbox (id, type, payload) SELECT e.i, e.t, e.p::jsonb "
        "FROM unnest(" + placeholders + ") AS e(i, t, p))"
    )


NOTIFY_SELECT = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"
