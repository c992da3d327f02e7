"""Consumers: one Redis consumer group per consuming service on the stream `events`.

    handlers = EventHandlers("admin")

    @handlers.on("user.created")
    async def on_user_created(session: AsyncSession, event: EventEnvelope) -> None: ...

    @handlers.on("payment.completed", "payment.failed")   # one function, several types
    async def on_payment_final(session, event) -> None: ...

    @handlers.on_any                                       # every event (admin audit)
    async def audit(session, event) -> None: ...

    app = create_service_app("admin", routers, handlers=handlers)

Each event runs all its handlers inside ONE database transaction that also inserts
`processed_events (consumer, event_id)`; a duplicate (redelivery) is skipped. The entry is
`XACK`ed only after that transaction committed. Handlers must not commit themselves; raising
rolls everything back and the entry is retried (reclaimed with `XAUTOCLAIM` once idle for
`EVENTS_CLAIM_IDLE_MS`); after `EVENTS_MAX_DELIVERIES` (5) failed deliveries it moves to
`events.dead`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from paysys.core.events import metrics
from paysys.core.events.catalogue import require_known_type
from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.transport import DEAD_STREAM, REDIS_DOWN, STREAM, Backoff
from paysys.core.logging import get_logger
from paysys.core.runtime import Runtime
from paysys.core.timefmt import utcnow_iso

log = get_logger("paysys.events.consumer")

Handler = Callable[[AsyncSession, EventEnvelope], Awaitable[None]]
H = TypeVar("H", bound=Handler)

# Bounded so a blocking read never outlives the Redis client's socket timeout (2 s).
MAX_BLOCK_MS = 1500


# Dedup rows for a whole batch in one statement; returns the ids not processed before.
_CLAIM_MANY = text(
    "INSERT INTO processed_events (consumer, event_id) "
    "SELECT :consumer, unnest(CAST(:ids AS uuid[])) ON CONFLICT DO NOTHING RETURNING event_id"
)


class EventHandlers:
    """The handlers of one consumer (= one consumer group, usually named after the service)."""

    def __init__(self, consumer: str) -> None:
        if not consumer or any(ch.isspace() for ch in consumer):
            raise ValueError("consumer name must be a non-empty word")
        self.consumer = consumer
        self._by_type: dict[str, list[Handler]] = {}
        self._any: list[Handler] = []

    def on(self, *event_types: str) -> Callable[[H], H]:
        """Register a handler for one or more event types (checked against the catalogue)."""
        if not event_types:
            raise ValueError("on() needs at least one event type (use on_any for all)")
        for event_type in event_types:
            require_known_type(event_type)

        def register(handler: H) -> H:
            for event_type in event_types:
                self._by_type.setdefault(event_type, []).append(handler)
            return handler

        return register

    def on_any(self, handler: H) -> H:
        """Register a handler for every event (e.g. the admin audit log)."""
        self._any.append(handler)
        return handler

    def handlers_for(self, event_type: str) -> list[Handler]:
        return [*self._by_type.get(event_type, ()), *self._any]

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._by_type)

    def __bool__(self) -> bool:
        return bool(self._by_type or self._any)

    async def dispatch(self, session: AsyncSession, event: EventEnvelope) -> bool:
        """Run this consumer's handlers for `event` in `session`'s transaction, exactly once.

        Inserts `processed_events (consumer, event_id)` first; returns False (and runs nothing)
        when that row already exists. The caller owns the transaction (begin/commit).
        """
        return (await self.dispatch_many(session, [event]))[0]

    async def dispatch_many(self, session: AsyncSession, events: list[EventEnvelope]) -> list[bool]:
        """`dispatch` for several events in one transaction, with one dedup statement; an
        event listed twice runs once. Returns, per event, whether it ran."""
        result = await session.execute(
            _CLAIM_MANY, {"consumer": self.consumer, "ids": [event.id for event in events]}
        )
        fresh = {row[0] for row in result}
        applied: list[bool] = []
        for event in events:
            run = event.id in fresh
            if run:
                fresh.discard(event.id)
                for handler in self.handlers_for(event.type):
                    await handler(session, event)
            applied.append(run)
        return applied

    async def run(self, runtime: Runtime) -> None:
        """The background worker (`create_service_app(..., handlers=...)` starts it)."""
        await Consumer(self, runtime).run()


def consumer_name(group: str) -> str:
    """Unique per process (a restarted process is a new consumer; its old entries are
    reclaimed from the dead one by XAUTOCLAIM)."""
    return f"{group}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


Entry = tuple[str, dict[str, str] | None]


@dataclass
class _Work:
    entry_id: str
    fields: dict[str, str]
    event: EventEnvelope
    deliveries: int


class Consumer:
    """Reads the group's entries, dispatches them, acknowledges, reclaims and dead-letters."""

    def __init__(
        self,
        handlers: EventHandlers,
        runtime: Runtime,
        *,
        name: str | None = None,
        redis: Redis | None = None,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        settings = runtime.settings
        self.handlers = handlers
        self.runtime = runtime
        self.group = handlers.consumer
        self.name = name or consumer_name(self.group)
        self.redis: Redis = redis or runtime.redis
        self.sessionmaker = sessionmaker or runtime.sessionmaker
        self.batch = max(1, settings.events_consumer_batch)
        self.block_ms = max(1, min(settings.events_block_ms, MAX_BLOCK_MS))
        self.claim_idle_ms = max(1, settings.events_claim_idle_ms)
        self.claim_interval = max(0.01, settings.events_claim_interval_ms / 1000)
        self.max_deliveries = max(1, settings.events_max_deliveries)
        self.maxlen = settings.events_stream_maxlen
        self.backoff = Backoff(cap=max(0.05, settings.events_retry_max_ms / 1000))
        self._group_ready = False
        self._last_error: dict[str, str] = {}

    # -- group ---------------------------------------------------------------------------
    async def ensure_group(self) -> None:
        """Create the group (from the stream's start, so events published before this
        service first ran are not missed; duplicates are harmless)."""
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(STREAM, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # -- loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        log.info("consumer started", group=self.group, consumer=self.name)
        next_claim = 0.0
        stopping = self.runtime.stopping
        while not stopping.is_set():
            try:
                await self.ensure_group()
                if time.monotonic() >= next_claim:
                    await self.claim_stale()
                    await self.observe()
                    next_claim = time.monotonic() + self.claim_interval
                block = int(min(self.block_ms, self.claim_interval * 1000)) or 1
                response: Any = await self.redis.xreadgroup(
                    self.group, self.name, {STREAM: ">"}, count=self.batch, block=block
                )
                for _stream, entries in response or ():
                    await self.process(entries, {})
                self.backoff.reset()
            except ResponseError as exc:
                if "NOGROUP" in str(exc) or "no such key" in str(exc):
                    # Redis restarted empty, or the stream was deleted: re-create the group.
                    self._group_ready = False
                    continue
                log.exception("consumer error", group=self.group)
                if await self.runtime.sleep(self.backoff.next()):
                    break
            except REDIS_DOWN as exc:
                self._group_ready = False
                log.warning("redis unavailable; consumer backing off", error=str(exc))
                if await self.runtime.sleep(self.backoff.next()):
                    break
        log.info("consumer stopped", group=self.group, consumer=self.name)

    async def process(self, entries: list[Entry], deliveries: dict[str, int]) -> None:
        """Handle entries in stream order; acknowledge the settled ones in one XACK.

        Nothing is acknowledged before the transaction that applied it committed.
        """
        settled: list[str] = []
        work: list[_Work] = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed from the stream while pending: nothing to do
                settled.append(entry_id)
                continue
            count = deliveries.get(entry_id, 1)
            try:
                event = EventEnvelope.model_validate_json(fields.get("event", ""))
            except ValidationError as exc:
                await self.dead_letter(entry_id, fields, count, f"malformed event: {exc}")
                continue
            if not self.handlers.handlers_for(event.type):
                metrics.HANDLED.labels(self.group, event.type, "ignored").inc()
                settled.append(entry_id)
                continue
            work.append(_Work(entry_id, fields, event, count))
        if work:
            settled.extend(await self._apply(work))
        if settled:
            await self.ack(settled)

    async def ack(self, entry_ids: list[str]) -> None:
        """XACK, only ever after the entries' transactions committed."""
        await self.redis.xack(STREAM, self.group, *entry_ids)

    async def _apply(self, work: list[_Work]) -> list[str]:
        """Apply events; returns the entry ids whose transaction committed.

        Several events are first tried in ONE transaction (one WAL flush for the batch). If
        any handler fails, that transaction rolls back and the events are applied one per
        transaction, which isolates the failing one (its handlers may thus run twice in that
        delivery, always inside transactions that are rolled back).
        """
        if len(work) > 1:
            committed = await self._apply_batch(work)
            if committed is not None:
                return committed
        return [item.entry_id for item in work if await self._apply_one(item)]

    async def _apply_batch(self, work: list[_Work]) -> list[str] | None:
        try:
            async with self.sessionmaker() as session, session.begin():
                outcomes = await self.handlers.dispatch_many(session, [w.event for w in work])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("batch failed; applying one by one", group=self.group, error=repr(exc))
            return None
        for item, applied in zip(work, outcomes, strict=True):
            self._settled(item, applied)
        return [item.entry_id for item in work]

    async def _apply_one(self, item: _Work) -> bool:
        try:
            async with self.sessionmaker() as session, session.begin():
                applied = await self.handlers.dispatch(session, item.event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(item, exc)
            return False
        self._settled(item, applied)
        return True

    def _settled(self, item: _Work, applied: bool) -> None:
        self._last_error.pop(item.entry_id, None)
        metrics.HANDLED.labels(
            self.group, item.event.type, "handled" if applied else "duplicate"
        ).inc()
        if applied:
            age = (datetime.now(UTC) - item.event.occurred_at).total_seconds()
            metrics.DELIVERY_SECONDS.labels(self.group).observe(max(0.0, age))

    async def _failed(self, item: _Work, exc: BaseException) -> None:
        """Count a failed delivery; after the last allowed one, move it to events.dead."""
        error = f"{type(exc).__name__}: {exc}"
        self._last_error[item.entry_id] = error
        metrics.HANDLED.labels(self.group, item.event.type, "failed").inc()
        log.warning(
            "event handler failed",
            group=self.group,
            event_type=item.event.type,
            event_id=str(item.event.id),
            deliveries=item.deliveries,
            error=error,
        )
        if item.deliveries >= self.max_deliveries:
            await self.dead_letter(item.entry_id, item.fields, item.deliveries, error)

    # -- retries, dead letters -------------------------------------------------------------
    async def claim_stale(self) -> int:
        """Take over entries idle longer than the claim time (a dead or stuck consumer's, or
        our own failed ones) and retry them; dead-letter those delivered too often."""
        start = "0-0"
        claimed_total = 0
        for _ in range(20):  # bounded per round; the next round continues
            result = await self.redis.xautoclaim(
                STREAM, self.group, self.name, self.claim_idle_ms, start_id=start, count=self.batch
            )
            start, entries = result[0], result[1]
            if entries:
                claimed_total += len(entries)
                deliveries = await self._delivery_counts(entries)
                overdue = [e for e in entries if deliveries.get(e[0], 1) > self.max_deliveries]
                for entry_id, fields in overdue:
                    error = self._last_error.get(
                        entry_id, "consumer died or stalled while handling"
                    )
                    await self.dead_letter(entry_id, fields or {}, deliveries[entry_id], error)
                due = [e for e in entries if deliveries.get(e[0], 1) <= self.max_deliveries]
                await self.process(due, deliveries)
            if start in ("0-0", b"0-0"):
                break
        return claimed_total

    async def _delivery_counts(self, entries: list[Entry]) -> dict[str, int]:
        ids = [entry_id for entry_id, _ in entries]
        rows = await self.redis.xpending_range(
            STREAM,
            self.group,
            min=min(ids, key=_id_key),
            max=max(ids, key=_id_key),
            count=len(ids) * 4 + 10,
            consumername=self.name,
        )
        wanted = set(ids)
        return {
            row["message_id"]: int(row["times_delivered"])
            for row in rows
            if row["message_id"] in wanted
        }

    async def dead_letter(
        self, entry_id: str, fields: dict[str, str], deliveries: int, error: str
    ) -> None:
        """Copy the entry to `events.dead` (with why) and acknowledge it, atomically."""
        dead: dict[Any, Any] = {
            **fields,
            "group": self.group,
            "streamId": entry_id,
            "deliveries": str(deliveries),
            "error": error[:2000],
            "deadAt": utcnow_iso(),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(DEAD_STREAM, dead, maxlen=self.maxlen, approximate=True)
            pipe.xack(STREAM, self.group, entry_id)
            await pipe.execute()
        self._last_error.pop(entry_id, None)
        metrics.DEAD_LETTERS.labels(self.group, fields.get("type", "unknown")).inc()
        log.error(
            "event moved to events.dead",
            group=self.group,
            stream_id=entry_id,
            event_type=fields.get("type"),
            deliveries=deliveries,
            error=error,
        )

    async def observe(self) -> None:
        """Refresh the lag / pending / dead-letter gauges."""
        groups: list[dict[str, Any]] = await self.redis.xinfo_groups(STREAM)
        for group in groups:
            if group.get("name") == self.group:
                metrics.CONSUMER_PENDING.labels(self.group).set(int(group.get("pending") or 0))
                lag = group.get("lag")
                if lag is not None:
                    metrics.CONSUMER_LAG.labels(self.group).set(int(lag))
        metrics.DEAD_LETTER_STREAM.set(await self.redis.xlen(DEAD_STREAM))


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


__all__ = ["Consumer", "EventHandlers", "Handler", "consumer_name"]
