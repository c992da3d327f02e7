"""Reading the Redis Stream `events` for the real-time hub, and SSE's resume from it.

One reader task per gateway process: `XREAD BLOCK` without a consumer group, so every replica
sees every event. It starts at the stream's newest entry when the process starts (its id is
read with `XREVRANGE`, not `$`: with `$` an event added between two reads would be skipped) and
always continues from the last id it read, so a Redis outage loses nothing that Redis kept:
the reader retries with back-off and resumes where it was; open sockets are not touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from paysys.core.events.transport import REDIS_DOWN, STREAM, Backoff
from paysys.core.logging import get_logger
from paysys.gateway.realtime import metrics

log = get_logger("paysys.gateway.realtime")

Entry = tuple[str, dict[str, str]]

REPLAY_MAX_EVENTS = 1000
REPLAY_MAX_AGE_MS = 10 * 60 * 1000


def create_stream_client(url: str, block_ms: int) -> Redis:
    """A client of its own for the blocking read: the shared one's 2 s socket timeout is
    shorter than a `BLOCK`, and a blocked read must not hold a pooled connection."""
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=block_ms / 1000 + 5.0,
        max_connections=4,
    )


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """`1767225605120-0` → (1767225605120, 0); ValueError when it is not a stream id."""
    millis, _, sequence = stream_id.partition("-")
    if not stream_id.isascii() or not millis.isdigit() or (sequence and not sequence.isdigit()):
        raise ValueError(f"not a stream id: {stream_id!r}")
    return int(millis), int(sequence or 0)


class StreamReader:
    """XREAD loop → `on_entry(stream_id, fields)` for every entry, in stream order."""

    def __init__(
        self,
        redis: Redis,
        on_entry: Callable[[str, dict[str, str]], Any],
        *,
        block_ms: int = 5000,
        count: int = 500,
        on_recovered: Callable[[], Any] | None = None,
    ) -> None:
        self.redis = redis
        self.on_entry = on_entry
        self.on_recovered = on_recovered
        self.block_ms = block_ms
        self.count = count
        self.last_id: str | None = None
        self.down = False
        self.backoff = Backoff(base=0.1, cap=2.0)

    async def tail_id(self) -> str:
        """The newest entry's id (`0-0` for an empty or missing stream: read from the start)."""
        newest = await self.redis.xrevrange(STREAM, count=1)
        return str(newest[0][0]) if newest else "0-0"

    async def read_once(self) -> int:
        """One XREAD (blocking up to `block_ms`); returns the number of entries handled."""
        if self.last_id is None:
            self.last_id = await self.tail_id()
        reply: Any = await self.redis.xread(
            {STREAM: self.last_id}, count=self.count, block=self.block_ms
        )
        handled = 0
        for _stream, entries in reply or ():
            for stream_id, fields in entries:
                self.last_id = stream_id
                handled += 1
                try:
                    self.on_entry(stream_id, fields)
                except Exception:  # one bad entry must not stop the feed
                    log.exception("real-time dispatch failed", stream_id=stream_id)
        return handled

    async def run(self) -> None:
        while True:
            try:
                await self.read_once()
            except REDIS_DOWN as exc:
                metrics.STREAM_ERRORS.inc()
                if not self.down:
                    self.down = True
                    log.warning(
                        "real-time stream unavailable; retrying",
                        error=type(exc).__name__,
                        last_id=self.last_id,
                    )
                await asyncio.sleep(self.backoff.next())
                continue
            except Exception:  # e.g. an error reply: never let the feed die
                metrics.STREAM_ERRORS.inc()
                log.exception("real-time stream read failed; retrying", last_id=self.last_id)
                await asyncio.sleep(self.backoff.next())
                continue
            if self.down:
                self.down = False
                self.backoff.reset()
                log.info("real-time stream back", last_id=self.last_id)
                if self.on_recovered is not None:
                    self.on_recovered()


async def replay(redis: Redis, after: str, now_ms: int | None = None) -> list[Entry] | None:
    """The entries after `after` (SSE `Last-Event-ID`), or None when they cannot all be given:
    older than 10 minutes, more than 1000 of them, or possibly trimmed (the stream's first entry
    is newer than `after`, or the stream is gone, e.g. Redis lost its data)."""
    after_key = stream_id_key(after)
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if now_ms - after_key[0] > REPLAY_MAX_AGE_MS:
        return None
    first: Any = await redis.xrange(STREAM, "-", "+", count=1)
    if not first or stream_id_key(first[0][0]) > after_key:
        return None
    entries: Any = await redis.xrange(STREAM, f"({after}", "+", count=REPLAY_MAX_EVENTS + 1)
    if len(entries) > REPLAY_MAX_EVENTS:
        return None
    return [(str(stream_id), fields) for stream_id, fields in entries]


async def newest_id(redis: Redis) -> str | None:
    newest = await redis.xrevrange(STREAM, count=1)
    return str(newest[0][0]) if newest else None
