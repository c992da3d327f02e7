"""Helpers for the profile tests: users inserted directly, access tokens, handy requests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from paysys.auth.models import AuthSession
from paysys.core.config import Settings, get_settings
from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.models import OutboxEvent
from paysys.core.tokens import TokenCodec
from paysys.profile.models import Profile
from paysys.users.models import User


@dataclass
class TestUser:
    __test__ = False

    id: uuid.UUID
    email: str
    name: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_user(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    role: str = "CUSTOMER",
    name: str = "Pat Example",
    settings: Settings | None = None,
) -> TestUser:
    """A users row (no profile: like a user whose `user.created` event is still on its way)."""
    user_id, sid = uuid.uuid4(), uuid.uuid4()
    email = f"profile-{user_id.hex[:10]}@example.com"
    async with sessionmaker() as session:
        await session.execute(
            insert(User).values(id=user_id, email=email, name=name, role=role, password_hash="x")
        )
        # A live session, so the database revocation check (Redis down) accepts the token.
        await session.execute(
            insert(AuthSession).values(
                id=sid,
                user_id=user_id,
                refresh_hash="x",
                rotated_at_ms=0,
                expires_at=datetime.now(UTC) + timedelta(days=1),
            )
        )
        await session.commit()
    token, _ = TokenCodec(settings or get_settings()).issue_access(
        user_id=user_id, email=email, name=name, role=role, sid=str(sid)
    )
    return TestUser(user_id, email, name, role, token)


async def client_user(client: httpx.AsyncClient, **kwargs: Any) -> TestUser:
    return await make_user(client.app.state.sessionmaker, **kwargs)  # type: ignore[attr-defined]


async def profile_rows(
    sessionmaker: async_sessionmaker[AsyncSession], user_id: uuid.UUID
) -> list[Profile]:
    async with sessionmaker() as session:
        rows = await session.execute(select(Profile).where(Profile.user_id == user_id))
        return list(rows.scalars())


async def outbox_events(
    sessionmaker: async_sessionmaker[AsyncSession], event_type: str = "profile.updated"
) -> list[dict[str, Any]]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(OutboxEvent.payload)
            .where(OutboxEvent.type == event_type)
            .order_by(OutboxEvent.seq)
        )
        return [row[0] for row in rows]


def user_event(event_type: str, user: TestUser, **data: Any) -> EventEnvelope:
    """An event as another service would publish it about `user`."""
    snapshot = {"id": str(user.id), "email": user.email, "name": user.name, "role": user.role}
    payloads: dict[str, dict[str, Any]] = {
        "user.created": {"user": snapshot, "via": "register"},
        "user.updated": {"user": snapshot, "changes": {}},
        "user.deleted": {"userId": str(user.id)},
        "user.role_changed": {"userId": str(user.id), "oldRole": "CUSTOMER", "newRole": "VENDOR"},
    }
    return EventEnvelope(
        type=event_type, source="auth-service", data={**payloads[event_type], **data}
    )
