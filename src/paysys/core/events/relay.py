"""The outbox relay: committed outbox rows → Redis Stream `events` + Pub/Sub `events.<type>`.

Runs in every service process (started by `create_service_app`) and in `paysys worker`.
Several relays at once are safe: each batch is claimed with `FOR UPDATE SKIP LOCKED`, so a row
is published by one relay, and a transaction-level advisory lock lets only one relay publish at
any moment, so rows reach the stream in `seq` order (which, for changes to one row, is their
commit order). A relay that dies after Redis acknowledged but before its commit leaves the rows
pending and they are published again: delivery is at least once, consumers deduplicate by id.

It wakes on PostgreSQL `LISTEN paysys_outbox` (emit NOTIFYs at commit) and polls every
`EVENTS_RELAY_POLL_MS` as a fallback; it holds exactly one database connection (LISTEN and
queries share it); while Redis is down it backs off exponentially (rows stay
in the outbox, requests keep succeeding); published rows older than
`EVENTS_OUTBOX_RETENTION_HOURS` are pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from paysys.core.db import raw_dsn
from paysys.core.events import metrics
from paysys.core.events.outbox import NOTIFY_CHANNEL
from paysys.core.events.transport import (
    REDIS_DOWN,
    STREAM,
    Backoff,
    channel,
    stream_fields,
)
from paysys.core.logging import get_logger
from paysys.core.runtime import Runtime

log = get_logger("paysys.events.relay")

# One relay publishes at a time (the others skip, never wait), so the stream gets the rows in
# `seq` order even with many relays; SKIP LOCKED keeps a straggler from double-publishing.
RELAY_LOCK_KEY = 0x5041_5953_5953  # "PAYSYS"
# The relay's own commit (marking rows published) may skip the WAL flush wait: if PostgreSQL
# crashed and lost it, the rows would simply be published again, and consumers deduplicate.
# (Consumers never do this: their commit must be durable before XACK.)
_TURN = (
    "SELECT pg_try_advisory_xact_lock($1) AND set_config('synchronous_commit', 'off', true) = 'off'"
)
# payload::text: the envelope JSON as stored, published as is (no decode/encode round trip).
_CLAIM = (
    "SELECT seq, id, type, payload::text AS payload FROM outbox WHERE published_at IS NULL "
    "ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
)
_MARK = "UPDATE outbox SET published_at = now(), attempts = attempts + 1 WHERE seq = ANY($1)"
_FAILED = "UPDATE outbox SET attempts = attempts + 1 WHERE seq = ANY($1)"
_BACKLOG = "SELECT count(*), min(created_at) FROM outbox WHERE published_at IS NULL"
_PRUNE = (
    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox "
    "WHERE published_at IS NOT NULL AND published_at < $1 LIMIT $2)"
)
PRUNE_CHUNK = 5000


class Relay:
    """One relay = ONE PostgreSQL connection, used both to LISTEN and for its queries (a relay
    runs in every service process, so its footprint on `max_connections` matters)."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.redis = runtime.redis
        self.batch = max(1, settings.events_relay_batch)
        self.poll = max(0.01, settings.events_relay_poll_ms / 1000)
        self.maxlen = settings.events_stream_maxlen
        self.retention = timedelta(hours=settings.events_outbox_retention_hours)
        self.prune_interval = max(1.0, settings.events_prune_interval_seconds)
        self.backoff = Backoff(cap=max(0.05, settings.events_retry_max_ms / 1000))
        self.wake = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._next_prune = 0.0
        self._next_observe = 0.0

    async def connection(self) -> asyncpg.Connection:
        """The relay's connection, (re)opened on demand; LISTENs on the outbox channel."""
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        settings = self.runtime.settings
        conn = await asyncpg.connect(
            raw_dsn(settings.database_url),
            timeout=5,
            server_settings={"application_name": f"paysys-{settings.service_name}-relay"},
        )
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self.wake.set()  # catch anything committed while we were not listening
        return conn

    # -- one batch -------------------------------------------------------------------------
    async def publish_batch(self) -> int:
        """Publish up to `batch` pending rows, oldest first; returns how many.

        Raises a Redis error when Redis did not acknowledge (rows stay pending, `attempts`+1).
        """
        conn = await self.connection()
        async with conn.transaction():
            if not await conn.fetchval(_TURN, RELAY_LOCK_KEY):
                return 0  # another relay is publishing right now; it drains everything
            rows = await conn.fetch(_CLAIM, self.batch)
            if not rows:
                return 0
            try:
                await self._send(rows)
            except REDIS_DOWN:
                failed = True
            else:
                failed = False
            await conn.execute(_FAILED if failed else _MARK, [row["seq"] for row in rows])
        if failed:
            metrics.PUBLISH_FAILURES.inc()
            raise ConnectionError("redis did not acknowledge the outbox batch")
        for row in rows:
            metrics.PUBLISHED.labels(row["type"]).inc()
        return len(rows)

    async def _send(self, rows: list[Any]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for row in rows:
                payload = row["payload"]
                pipe.xadd(
                    STREAM,
                    stream_fields(str(row["id"]), row["type"], payload),  # type: ignore[arg-type]
                    maxlen=self.maxlen,
                    approximate=True,
                )
                pipe.publish(channel(row["type"]), payload)
            await pipe.execute()

    async def drain(self) -> int:
        """Publish until the outbox is empty (or a batch comes back short)."""
        total = 0
        while not self.runtime.stopping.is_set():
            sent = await self.publish_batch()
            total += sent
            if sent < self.batch:
                break
        return total

    # -- housekeeping ----------------------------------------------------------------------
    async def prune(self, now: datetime | None = None) -> int:
        """Delete published rows older than the retention period (in chunks)."""
        before = (now or datetime.now(UTC)) - self.retention
        conn = await self.connection()
        total = 0
        while True:
            status = await conn.execute(_PRUNE, before, PRUNE_CHUNK)
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < PRUNE_CHUNK:
                break
        if total:
            metrics.PRUNED.inc(total)
            log.info("outbox pruned", rows=total)
        return total

    async def observe(self) -> None:
        conn = await self.connection()
        count, oldest = await conn.fetchrow(_BACKLOG)
        metrics.OUTBOX_BACKLOG.set(int(count))
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        metrics.OUTBOX_OLDEST_SECONDS.set(max(0.0, age))

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_observe:
            self._next_observe = now + 1.0
            await self.observe()
        if now >= self._next_prune:
            self._next_prune = now + self.prune_interval
            await self.prune()

    # -- LISTEN ----------------------------------------------------------------------------
    def _notified(self, *_: object) -> None:
        self.wake.set()

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None

    async def _wait(self, seconds: float) -> None:
        """Until a NOTIFY, the poll interval, or stopping, whichever comes first."""
        waiters = [
            asyncio.ensure_future(self.wake.wait()),
            asyncio.ensure_future(self.runtime.stopping.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # -- loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        log.info("relay started")
        stopping = self.runtime.stopping
        try:
            while not stopping.is_set():
                self.wake.clear()
                try:
                    await self.drain()
                    await self._housekeeping()
                except REDIS_DOWN as exc:
                    delay = self.backoff.next()
                    log.warning("relay cannot publish; backing off", error=str(exc))
                    if await self.runtime.sleep(delay):
                        break
                    continue
                except Exception:
                    delay = self.backoff.next()
                    log.exception("relay error; backing off")
                    if await self.runtime.sleep(delay):
                        break
                    continue
                self.backoff.reset()
                await self._wait(self.poll)
        finally:
            await self.close()
            log.info("relay stopped")


async def run_relay(runtime: Runtime) -> None:
    """The relay as a `Worker` (every service process runs one)."""
    await Relay(runtime).run()


__all__ = ["Relay", "run_relay"]
