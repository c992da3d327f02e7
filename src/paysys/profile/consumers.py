"""The profile service's event consumer (events.md): `user.created` creates the profile,
`user.deleted` erases personal data, `user.updated` / `user.role_changed` drop the cached copy
(the profile JSON embeds the user's email, name and role).

Handlers run inside the consumer's transaction and must not commit; the Redis copy is dropped
after that transaction commits (an earlier drop could be refilled from the old row by a
concurrent reader).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.core.events.catalogue import parse
from paysys.core.events.consumer import EventHandlers
from paysys.core.events.envelope import EventEnvelope
from paysys.core.logging import get_logger
from paysys.core.runtime import Runtime
from paysys.profile import service
from paysys.profile.cache import ProfileCache

log = get_logger("paysys.profile.consumers")
CONSUMER = "profile"


def _user_id(event: EventEnvelope) -> uuid.UUID:
    data: Any = parse(event)
    if event.type in ("user.created", "user.updated"):
        return uuid.UUID(str(data.user.id))
    return uuid.UUID(str(data.user_id))


class ProfileConsumer:
    """The handlers plus the Redis client they invalidate with (bound from the runtime)."""

    def __init__(self, redis: Redis | None = None) -> None:
        self.redis = redis
        self.handlers = EventHandlers(CONSUMER)
        self._tasks: set[asyncio.Task[None]] = set()
        self.handlers.on("user.created")(self.on_user_created)
        self.handlers.on("user.deleted")(self.on_user_deleted)
        self.handlers.on("user.updated", "user.role_changed")(self.on_user_changed)

    async def bind(self, runtime: Runtime) -> None:
        """A worker that returns at once: hands the runtime's Redis to the handlers."""
        self.redis = runtime.redis

    def invalidate_after_commit(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        if self.redis is None:  # pragma: no cover - bound before the consumer reads anything
            log.warning("profile cache not bound; copy expires by TTL", user_id=str(user_id))
            return
        cache = ProfileCache(self.redis)

        def after_commit(_session: object) -> None:
            task = asyncio.get_running_loop().create_task(cache.invalidate(user_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        sa_event.listen(session.sync_session, "after_commit", after_commit, once=True)

    async def drain(self) -> None:
        """Wait for pending invalidations (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def on_user_created(self, session: AsyncSession, event: EventEnvelope) -> None:
        user_id = _user_id(event)
        if await service.ensure_profile(session, user_id):
            log.info("profile created", user_id=str(user_id))
        self.invalidate_after_commit(session, user_id)

    async def on_user_deleted(self, session: AsyncSession, event: EventEnvelope) -> None:
        user_id = _user_id(event)
        await service.remove_personal_data(session, user_id)
        log.info("profile personal data removed", user_id=str(user_id))
        self.invalidate_after_commit(session, user_id)

    async def on_user_changed(self, session: AsyncSession, event: EventEnvelope) -> None:
        self.invalidate_after_commit(session, _user_id(event))
