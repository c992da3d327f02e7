"""Helpers for the event-hub tests.

The hub's tests run against a PRIVATE database (migrated to `0001_foundation`: outbox and
processed_events) and a private Redis logical database of the run's redis-server. Every
service process now runs an outbox relay, so a shared database would let other tests' service
processes publish (and consume) our events and make counts meaningless.

Handlers under test record what they apply in `events_test.applied` (no unique constraint: a
duplicate application would show up as a second row). It lives in its own schema so
`alembic check` never sees it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text
from sqlalchemy.engine import make_url

from paysys.core.config import Settings
from paysys.core.db import drop_database, raw_dsn
from paysys.core.events.consumer import EventHandlers
from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.outbox import emit
from paysys.core.events.relay import Relay
from paysys.core.runtime import Runtime, Worker

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS events_test;
CREATE TABLE IF NOT EXISTS events_test.applied (
    n bigserial PRIMARY KEY,
    consumer text NOT NULL,
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    worker text NOT NULL DEFAULT '',
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""
RESET_SQL = "TRUNCATE outbox, processed_events, events_test.applied RESTART IDENTITY"

# Short timings so retries, reclaims and dead letters happen in well under a second.
FAST: dict[str, Any] = {
    "events_relay_poll_ms": 200,
    "events_block_ms": 100,
    "events_claim_idle_ms": 300,
    "events_claim_interval_ms": 100,
    "events_retry_max_ms": 300,
    "background_workers": True,
}


@dataclass(frozen=True)
class HubUrls:
    database_url: str
    redis_url: str

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url}


def _in_thread(fn: Callable[[], Any]) -> Any:
    """Run sync code that calls asyncio.run() away from pytest's event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def create_hub_database(tag: str, revision: str = "0001_foundation") -> HubUrls:
    from paysys.db import migrate

    base = make_url(os.environ["DATABASE_URL"])
    name = f"{base.database}_ev_{tag}"[:63]
    database_url = base.set(database=name).render_as_string(hide_password=False)
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/1"
    settings = Settings(database_url=database_url, redis_url=redis_url)

    def prepare() -> None:
        asyncio.run(drop_database(database_url))
        migrate.upgrade(settings, revision)

        async def schema() -> None:
            conn = await asyncpg.connect(raw_dsn(database_url))
            try:
                await conn.execute(SCHEMA_SQL)
            finally:
                await conn.close()

        asyncio.run(schema())

    _in_thread(prepare)
    return HubUrls(database_url, redis_url)


def drop_hub_database(urls: HubUrls) -> None:
    _in_thread(lambda: asyncio.run(drop_database(urls.database_url)))


_shared: HubUrls | None = None


def shared_hub_database(config: Any) -> HubUrls:
    """One private hub database per test run (DROP DATABASE costs a checkpoint: seconds on a
    busy machine), dropped when pytest ends (`config.add_cleanup`)."""
    global _shared
    if _shared is None:
        urls = create_hub_database("hub", "head")
        config.add_cleanup(lambda: drop_hub_database(urls))
        _shared = urls
    return _shared


async def wait_for(
    check: Callable[[], Awaitable[bool]],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> float:
    """Poll `check` until true; returns the seconds it took; fails after `timeout`."""
    start = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def recording_handlers(consumer: str, worker: str = "") -> EventHandlers:
    """A consumer whose one handler records every event it applies."""
    handlers = EventHandlers(consumer)

    @handlers.on_any
    async def record(session: Any, event: EventEnvelope) -> None:
        await record_applied(session, consumer, event, worker)

    return handlers


async def record_applied(session: Any, consumer: str, event: EventEnvelope, worker: str) -> None:
    await session.execute(
        text(
            "INSERT INTO events_test.applied (consumer, event_id, event_type, worker) "
            "VALUES (:consumer, :event_id, :event_type, :worker)"
        ),
        {"consumer": consumer, "event_id": event.id, "event_type": event.type, "worker": worker},
    )


def config_data(i: int = 0) -> dict[str, Any]:
    return {"key": f"test.key{i}", "oldValue": i, "newValue": i + 1}


@dataclass
class Hub:
    """Per-test access to the private database and Redis, plus runtimes to close."""

    urls: HubUrls
    redis: Redis
    conn: asyncpg.Connection
    runtimes: list[Runtime] = field(default_factory=list)
    relays: list[Relay] = field(default_factory=list)

    def settings(self, **overrides: Any) -> Settings:
        values = {**FAST, **overrides}
        return Settings(
            database_url=self.urls.database_url, redis_url=self.urls.redis_url, **values
        )

    def runtime(self, **overrides: Any) -> Runtime:
        runtime = Runtime.create(self.settings(**overrides))
        self.runtimes.append(runtime)
        return runtime

    def relay(self, runtime: Runtime) -> Relay:
        relay = Relay(runtime)
        self.relays.append(relay)
        return relay

    def start(self, workers: list[Worker], **overrides: Any) -> Runtime:
        runtime = self.runtime(**overrides)
        runtime.start_workers(workers)
        return runtime

    async def emit_many(
        self,
        runtime: Runtime,
        count: int,
        *,
        per_tx: int = 1,
        event_type: str = "config.updated",
        start: int = 0,
    ) -> list[uuid.UUID]:
        ids: list[uuid.UUID] = []
        for first in range(start, start + count, per_tx):
            async with runtime.sessionmaker() as session, session.begin():
                for i in range(first, min(first + per_tx, start + count)):
                    data = config_data(i) if event_type == "config.updated" else {}
                    event = await emit(session, event_type, data)
                    ids.append(event.id)
        return ids

    async def applied(self, consumer: str) -> dict[uuid.UUID, int]:
        rows = await self.conn.fetch(
            "SELECT event_id, count(*) AS n FROM events_test.applied WHERE consumer = $1 "
            "GROUP BY event_id",
            consumer,
        )
        return {row["event_id"]: row["n"] for row in rows}

    async def applied_total(self, consumer: str) -> int:
        return int(
            await self.conn.fetchval(
                "SELECT count(*) FROM events_test.applied WHERE consumer = $1", consumer
            )
        )

    async def pending_outbox(self) -> int:
        return int(
            await self.conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        )

    async def group_pending(self, group: str) -> int:
        summary = await self.redis.xpending("events", group)
        return int(summary["pending"])

    async def stream_ids(self, stream: str = "events") -> list[str]:
        entries = await self.redis.xrange(stream)
        return [fields["id"] for _, fields in entries]

    async def close(self) -> None:
        for relay in self.relays:
            await relay.close()
        for runtime in self.runtimes:
            await runtime.close(grace=5)


@asynccontextmanager
async def open_hub(urls: HubUrls) -> AsyncIterator[Hub]:
    """A clean slate: empty outbox/processed_events/applied and an empty Redis database."""
    conn = await asyncpg.connect(raw_dsn(urls.database_url))
    # Retries: the test's own client must survive the redis-server restarts of the drills.
    redis = Redis.from_url(
        urls.redis_url,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 5),
        retry_on_error=[RedisConnectionError],
    )
    await conn.execute(RESET_SQL)
    await redis.flushdb()
    hub = Hub(urls, redis, conn)
    try:
        yield hub
    finally:
        await hub.close()
        await redis.aclose()
        await conn.close()
