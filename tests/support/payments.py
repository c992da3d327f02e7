"""Helpers for the payments tests: users by direct insert, tokens, bodies, signed webhooks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from paysys.core.config import get_settings
from paysys.core.db import raw_dsn
from paysys.core.tokens import TokenCodec
from paysys.payments import webhooks


@dataclass
class TestUser:
    id: uuid.UUID
    email: str
    name: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@asynccontextmanager
async def pg() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(raw_dsn(get_settings().database_url))
    try:
        yield conn
    finally:
        await conn.close()


def token_for(user_id: uuid.UUID, email: str, name: str, role: str, sid: uuid.UUID) -> str:
    token, _ = TokenCodec(get_settings()).issue_access(
        user_id=user_id, email=email, name=name, role=role, sid=str(sid)
    )
    return token


async def make_user(
    role: str = "CUSTOMER",
    *,
    name: str | None = None,
    email: str | None = None,
    active: bool = True,
) -> TestUser:
    user_id = uuid.uuid4()
    email = email or f"{role.lower()}-{user_id.hex[:8]}@example.com"
    name = name or f"{role.title()} {user_id.hex[:6]}"
    async with pg() as conn:
        await conn.execute(
            "INSERT INTO users (id, email, name, role, password_hash, is_active) "
            "VALUES ($1, $2, $3, $4, 'x', $5)",
            user_id,
            email,
            name,
            role,
            active,
        )
        # A live session, so the token also passes the database revocation check that
        # services use when Redis is slow or down.
        sid = uuid.uuid4()
        await conn.execute(
            "INSERT INTO auth_sessions (id, user_id, refresh_hash, rotated_at_ms, expires_at) "
            "VALUES ($1, $2, 'x', 0, now() + interval '1 day')",
            sid,
            user_id,
        )
    return TestUser(user_id, email, name, role, token_for(user_id, email, name, role, sid))


def body(recipient: TestUser | None = None, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "amount": "100.00",
        "currency": "USD",
        "type": "instant",
        "description": "Invoice 42",
    }
    if recipient is not None:
        data["recipientId"] = str(recipient.id)
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def signed(payload: dict[str, Any] | bytes, secret: str | None = None, t: int | None = None):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    secret = secret or get_settings().psp_webhook_secret
    headers = {
        "Content-Type": "application/json",
        webhooks.HEADER: webhooks.sign(raw, secret, t),
    }
    return raw, headers


async def set_status(payment_id: str | uuid.UUID, status: str) -> None:
    """Force a status directly in the database (test setup only)."""
    async with pg() as conn:
        await conn.execute(
            "UPDATE payments SET status = $2 WHERE id = $1", uuid.UUID(str(payment_id)), status
        )


async def events_of(payment_id: str, types: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    async with pg() as conn:
        rows = await conn.fetch(
            "SELECT payload FROM outbox WHERE payload->'data'->>'paymentId' = $1 "
            "OR payload->'data'->'payment'->>'id' = $1 ORDER BY seq",
            str(payment_id),
        )
    found = [json.loads(r["payload"]) for r in rows]
    return [e for e in found if types is None or e["type"] in types]


async def count(sql: str, *args: Any) -> int:
    async with pg() as conn:
        return int(await conn.fetchval(sql, *args))


async def payment_statuses(ids: list[str]) -> dict[str, str]:
    """Payment id → status, straight from the database."""
    async with pg() as conn:
        rows = await conn.fetch(
            "SELECT id, status FROM payments WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids],
        )
    return {str(r["id"]): r["status"] for r in rows}


async def wait_for_statuses(
    ids: list[str], wanted: set[str], *, some: str | None = None, timeout: float = 60.0
) -> dict[str, str]:
    """Poll until every payment is in `wanted` (and, with `some`, at least one is in it)."""
    deadline = time.monotonic() + timeout
    while True:
        current = await payment_statuses(ids)
        values = set(current.values())
        if len(current) == len(ids) and values <= wanted and (some is None or some in values):
            return current
        assert time.monotonic() < deadline, current
        await asyncio.sleep(0.05)
