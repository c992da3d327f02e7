"""The profile consumer (events.md): user.created, user.deleted, user.updated, exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, text

from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.models import ProcessedEvent
from paysys.core.events.outbox import emit
from paysys.core.runtime import Runtime
from paysys.profile.cache import DATA_KEY, GEN_KEY, ProfileCache
from paysys.profile.consumers import ProfileConsumer
from paysys.profile.models import Profile
from paysys.profile.service import ensure_profile
from tests.support.auth import runtime
from tests.support.profile import client_user, make_user, profile_rows, user_event

pytestmark = pytest.mark.usefixtures("clean_state")

FAST = {
    "events_relay_poll_ms": 100,
    "events_block_ms": 100,
    "events_claim_idle_ms": 300,
    "events_claim_interval_ms": 100,
    "background_workers": True,
}


@pytest.fixture
async def rt() -> AsyncIterator[Runtime]:
    async with runtime() as value:
        yield value


async def deliver(consumer: ProfileConsumer, rt: Runtime, event: EventEnvelope) -> bool:
    """What the consumer loop does for one entry: one transaction, dispatch, commit."""
    async with rt.sessionmaker() as session, session.begin():
        applied = await consumer.handlers.dispatch(session, event)
    await consumer.drain()
    return applied


async def test_registered_types() -> None:
    assert ProfileConsumer().handlers.event_types == {
        "user.created",
        "user.deleted",
        "user.updated",
        "user.role_changed",
    }


async def test_user_created_creates_profile_once(rt: Runtime) -> None:
    user = await make_user(rt.sessionmaker)
    consumer = ProfileConsumer(rt.redis)
    event = user_event("user.created", user)
    assert await deliver(consumer, rt, event) is True
    rows = await profile_rows(rt.sessionmaker, user.id)
    assert len(rows) == 1 and rows[0].phone_number is None and rows[0].preferences == {}
    assert await deliver(consumer, rt, event) is False  # redelivery: skipped
    # Another user.created for the same user (e.g. replayed by hand): still one row.
    assert await deliver(consumer, rt, user_event("user.created", user)) is True
    assert len(await profile_rows(rt.sessionmaker, user.id)) == 1
    async with rt.sessionmaker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(ProcessedEvent)
            .where(ProcessedEvent.consumer == "profile")
        )
    assert count == 2


async def test_user_created_for_unknown_user_is_harmless(rt: Runtime) -> None:
    ghost = await make_user(rt.sessionmaker)
    async with rt.sessionmaker() as session:
        await session.execute(text("DELETE FROM users WHERE id = :id"), {"id": ghost.id})
        await session.commit()
    assert await deliver(ProfileConsumer(rt.redis), rt, user_event("user.created", ghost))
    assert await profile_rows(rt.sessionmaker, ghost.id) == []


async def test_concurrent_creators_make_one_row(rt: Runtime) -> None:
    user = await make_user(rt.sessionmaker)

    async def create() -> bool:
        async with rt.sessionmaker() as session:
            created = await ensure_profile(session, user.id)
            await asyncio.sleep(0.05)  # hold the transaction open so the others must wait
            await session.commit()
            return created

    results = await asyncio.gather(*(create() for _ in range(6)))
    assert sorted(results) == [False] * 5 + [True]
    assert len(await profile_rows(rt.sessionmaker, user.id)) == 1


async def test_user_deleted_removes_personal_data_and_cache(app_client) -> None:  # type: ignore[no-untyped-def]
    client = await app_client("profile")
    rt: Runtime = client.app.state.runtime
    user = await client_user(client)
    await client.put(
        "/api/profile",
        json={
            "phoneNumber": "+14155550100",
            "address": "1 Main St",
            "avatarUrl": "https://a.example/x.png",
            "bio": "about me",
        },
        headers=user.headers,
    )
    await client.put(
        "/api/profile/preferences", json={"timezone": "Europe/Paris"}, headers=user.headers
    )
    cached = (await client.get("/api/profile", headers=user.headers)).json()["data"]
    assert cached["bio"] == "about me"
    assert await rt.redis.get(DATA_KEY.format(user.id)) is not None

    assert await deliver(ProfileConsumer(rt.redis), rt, user_event("user.deleted", user))

    (row,) = await profile_rows(rt.sessionmaker, user.id)
    assert (row.phone_number, row.address, row.avatar_url, row.bio) == (None, None, None, None)
    assert row.preferences == {} and row.personal_data_removed_at is not None
    assert await rt.redis.get(DATA_KEY.format(user.id)) is None
    # A token that somehow still works (revocation is auth's job) sees the erased profile.
    data = (await client.get("/api/profile", headers=user.headers)).json()["data"]
    assert data["phoneNumber"] is None and data["bio"] is None
    assert data["preferences"]["timezone"] == "UTC"


async def test_user_deleted_before_created(rt: Runtime) -> None:
    user = await make_user(rt.sessionmaker)
    consumer = ProfileConsumer(rt.redis)
    assert await deliver(consumer, rt, user_event("user.deleted", user))
    assert await deliver(consumer, rt, user_event("user.created", user))
    (row,) = await profile_rows(rt.sessionmaker, user.id)
    assert row.personal_data_removed_at is not None


@pytest.mark.parametrize("event_type", ["user.updated", "user.role_changed"])
async def test_user_changes_invalidate_cache(app_client, event_type: str) -> None:  # type: ignore[no-untyped-def]
    client = await app_client("profile")
    rt: Runtime = client.app.state.runtime
    user = await client_user(client)
    await client.get("/api/profile", headers=user.headers)
    async with rt.sessionmaker() as session:
        await session.execute(
            text("UPDATE users SET name = 'New Name', role = 'VENDOR' WHERE id = :id"),
            {"id": user.id},
        )
        await session.commit()
    stale = (await client.get("/api/profile", headers=user.headers)).json()["data"]
    assert stale["user"]["name"] == user.name  # served from the cache
    await deliver(ProfileConsumer(rt.redis), rt, user_event(event_type, user))
    fresh = (await client.get("/api/profile", headers=user.headers)).json()["data"]
    assert fresh["user"]["name"] == "New Name" and fresh["user"]["role"] == "VENDOR"


async def test_invalidation_waits_for_commit(rt: Runtime) -> None:
    """A handler that fails rolls back and leaves the cache alone; only a commit invalidates."""
    user = await make_user(rt.sessionmaker)
    consumer = ProfileConsumer(rt.redis)
    await rt.redis.set(DATA_KEY.format(user.id), "{}")
    with pytest.raises(RuntimeError):
        async with rt.sessionmaker() as session, session.begin():
            await consumer.handlers.dispatch(session, user_event("user.deleted", user))
            assert await rt.redis.get(DATA_KEY.format(user.id)) == "{}"
            raise RuntimeError("boom")
    await consumer.drain()
    assert await rt.redis.get(DATA_KEY.format(user.id)) == "{}"
    assert await profile_rows(rt.sessionmaker, user.id) == []


async def test_stale_reader_cannot_refill_after_invalidation(rt: Runtime) -> None:
    cache = ProfileCache(rt.redis)
    user_id = uuid.uuid4()
    cached, generation = await cache.get(user_id)
    assert cached is None and generation == ""
    await cache.invalidate(user_id)  # a writer committed meanwhile
    assert await cache.put(user_id, {"bio": "old"}, generation) is False
    assert await rt.redis.get(DATA_KEY.format(user_id)) is None
    _, generation = await cache.get(user_id)
    assert generation == "1" and await rt.redis.ttl(GEN_KEY.format(user_id)) > 0
    assert await cache.put(user_id, {"bio": "new"}, generation) is True
    assert (await cache.get(user_id))[0] == {"bio": "new"}


async def test_cache_tolerates_redis_down(rt: Runtime, redis_server) -> None:  # type: ignore[no-untyped-def]
    cache = ProfileCache(rt.redis)
    redis_server.stop()
    try:
        assert await cache.get(uuid.uuid4()) == (None, None)
        assert await cache.put(uuid.uuid4(), {}, "") is False
        await cache.invalidate(uuid.uuid4())  # logged, not raised
    finally:
        redis_server.start()


async def _poll(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_events_flow_through_the_running_consumer(app_client) -> None:  # type: ignore[no-untyped-def]
    """Outbox → relay → Redis stream → the app's own consumer group → profile rows."""
    client = await app_client("profile", **FAST)
    rt: Runtime = client.app.state.runtime
    user = await client_user(client)
    created = user_event("user.created", user)
    async with rt.sessionmaker() as session:
        await emit(session, "user.created", created.data, source="auth-service")
        await session.commit()

    async def has_profile() -> bool:
        return len(await profile_rows(rt.sessionmaker, user.id)) == 1

    await _poll(has_profile)
    await client.patch("/api/profile", json={"bio": "hi"}, headers=user.headers)
    await client.get("/api/profile", headers=user.headers)
    assert await rt.redis.get(DATA_KEY.format(user.id)) is not None
    async with rt.sessionmaker() as session:
        await emit(session, "user.deleted", {"userId": str(user.id)}, source="admin-service")
        await session.commit()

    async def erased() -> bool:
        (row,) = await profile_rows(rt.sessionmaker, user.id)
        cached = await rt.redis.get(DATA_KEY.format(user.id))
        return row.bio is None and row.personal_data_removed_at is not None and cached is None

    await _poll(erased)
    async with rt.sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(Profile))
    assert total == 1
