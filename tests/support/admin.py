"""Helpers for the admin tests: users straight in the database, tokens, events, polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from paysys.core.config import Settings, get_settings
from paysys.core.db import raw_dsn
from paysys.core.events.envelope import EventEnvelope
from paysys.core.tokens import TokenCodec

PASSWORD = "TestPassword123!"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def db() -> asyncpg.Connection:
    return await asyncpg.connect(raw_dsn(get_settings().database_url))


async def insert_user(
    *,
    role: str = "CUSTOMER",
    email: str | None = None,
    name: str | None = None,
    is_active: bool = True,
    deleted: bool = False,
    password_hash: str = "not-a-real-hash",
) -> dict[str, Any]:
    """A user row written directly (fast fixture data; real flows go through the API)."""
    user_id = uuid.uuid4()
    email = email or f"{role.lower()}-{user_id.hex[:8]}@example.com"
    name = name or f"{role.title()} {user_id.hex[:4]}"
    conn = await db()
    try:
        await conn.execute(
            "INSERT INTO users (id, email, name, role, password_hash, is_active, deleted_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN now() END)",
            user_id,
            email,
            name,
            role,
            password_hash,
            is_active,
            deleted,
        )
    finally:
        await conn.close()
    return {"id": user_id, "email": email, "name": name, "role": role}


def token_for(
    user: dict[str, Any],
    settings: Settings | None = None,
    sid: uuid.UUID | None = None,
    token_version: int = 0,
) -> str:
    """An access token for `user` (`token_version`: its current version, 0 until revoked)."""
    codec = TokenCodec(settings or get_settings())
    token, _ = codec.issue_access(
        user_id=user["id"],
        email=user["email"],
        name=user["name"],
        role=user["role"],
        sid=str(sid or uuid.uuid4()),
        token_version=token_version,
    )
    return token


async def session_token(user: dict[str, Any]) -> str:
    """An access token backed by a real `auth_sessions` row (what login makes), so it also
    passes the database revocation check used while Redis is down."""
    sid = uuid.uuid4()
    await fetch(
        "INSERT INTO auth_sessions (id, user_id, refresh_hash, rotated_at_ms, expires_at)"
        " VALUES ($1, $2, 'x', 0, now() + interval '1 day')",
        sid,
        user["id"],
    )
    return token_for(user, sid=sid)


async def admin_and_token(**kwargs: Any) -> tuple[dict[str, Any], dict[str, str]]:
    admin = await insert_user(role="ADMIN", **kwargs)
    return admin, bearer(await session_token(admin))


def event(type: str, data: dict[str, Any], **fields: Any) -> EventEnvelope:
    return EventEnvelope(type=type, source="test-service", data=data, **fields)


async def fetch(sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await db()
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def poll(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 15.0, interval: float = 0.05
) -> Any:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def insert_payment(
    sender_id: uuid.UUID,
    recipient_id: uuid.UUID | None,
    *,
    amount: int = 1000,
    currency: str = "USD",
    status: str = "pending",
    description: str = "test payment",
    created_at: Any = None,
    completed_at: Any = None,
) -> uuid.UUID:
    """A payment row written directly (amount in minor units)."""
    payment_id = uuid.uuid4()
    await fetch(
        "INSERT INTO payments (id, sender_id, recipient_id, amount, currency, status, type,"
        " description, created_at, completed_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'instant', $7, coalesce($8, now()), $9)",
        payment_id,
        sender_id,
        recipient_id,
        amount,
        currency,
        status,
        description,
        created_at,
        completed_at,
    )
    return payment_id
