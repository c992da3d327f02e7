"""The asyncpg connection the payments statements (`paysys.payments.queries`) run on.

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

from paysys.core.errors import ServiceUnavailable

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
    """Compact JSON (response bodies, jsonb parameters)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
