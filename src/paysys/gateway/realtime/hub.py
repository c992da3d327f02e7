"""Rooms and fan-out: which local connection gets which event (api-contracts §9.3, §9.4).

The hub holds this process's open connections, indexed by room (`user:<id>`, `role:<role>`,
`broadcast`). The stream reader hands it every entry of the Redis Stream `events`, in stream
order; the hub drops event ids it saw in the last 10 minutes, maps the event to its messages
(`messages.map_event`), and hands each message to every connection in one of its rooms, once per
connection however many rooms match. A connection queues what it is given (bounded, see
`ws.py`/`sse.py`), so one slow client never holds up the others or the reader.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from paysys.core.logging import get_logger
from paysys.core.tokens import Principal
from paysys.gateway.realtime import metrics
from paysys.gateway.realtime.messages import (
    ADMIN_ROOM,
    PAYMENT_EVENTS,
    REVOCATION_EVENTS,
    map_event,
    revoked_user,
    rooms_for,
)

log = get_logger("paysys.gateway.realtime")

# Close codes of §9.6 and their reasons.
GOING_AWAY = 1001
POLICY = 1008
TOO_BIG = 1009
UNSUPPORTED = 1003
INTERNAL = 1011
SLOW_CONSUMER = 1013
TOKEN_EXPIRED = 4401
TOKEN_REVOKED = 4403
REASONS = {
    GOING_AWAY: "going away",
    POLICY: "policy violation",
    TOO_BIG: "message too big",
    UNSUPPORTED: "binary frames are not accepted",
    INTERNAL: "internal error",
    SLOW_CONSUMER: "slow consumer",
    TOKEN_EXPIRED: "TOKEN_EXPIRED",
    TOKEN_REVOKED: "TOKEN_INVALID",
}


class RecentIds:
    """Event ids seen in the last `ttl` seconds, at most `max_size` of them (oldest forgotten
    first): the relay delivers at least once, a connection gets an event once."""

    def __init__(
        self,
        ttl: float = 600.0,
        max_size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self.clock = clock
        self._seen: dict[str, float] = {}  # insertion order = age order

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, event_id: str) -> bool:
        """Remember `event_id`; False when it was already seen (a duplicate)."""
        now = self.clock()
        seen = self._seen
        while seen:
            oldest = next(iter(seen))
            if now - seen[oldest] < self.ttl and len(seen) < self.max_size:
                break
            del seen[oldest]
        if event_id in seen:
            return False
        seen[event_id] = now
        return True


class Connection:
    """An open connection as the hub sees it; `ws.py` and `sse.py` say how it sends."""

    transport: ClassVar[str] = "?"
    __slots__ = ("__weakref__", "id", "principal", "rooms", "slot", "user_id")

    def __init__(self, connection_id: str, principal: Principal, slot: str = "") -> None:
        self.id = connection_id
        self.slot = slot  # its member in the per-user connection count (limits.py)
        self.principal = principal
        self.user_id = str(principal.id)
        self.rooms = rooms_for(principal.id, principal.role)

    def deliver(self, stream_id: str, event_type: str, text: str) -> None:
        """Queue one event message (never blocks; a connection over its queue limit closes)."""
        raise NotImplementedError

    def close(self, code: int, error_code: str | None = None, message: str = "") -> None:
        """End the connection with `code` (§9.6), after an `error` message when given."""
        raise NotImplementedError

    def revoke(self) -> None:
        self.close(TOKEN_REVOKED, "TOKEN_INVALID", "Token has been revoked")

    def expire(self) -> None:
        self.close(TOKEN_EXPIRED, "TOKEN_EXPIRED", "Token has expired")


def _lag_seconds(occurred_at: Any) -> float | None:
    if not isinstance(occurred_at, str):
        return None
    try:
        return max(0.0, time.time() - datetime.fromisoformat(occurred_at).timestamp())
    except ValueError:
        return None


class Hub:
    def __init__(self, recent: RecentIds | None = None) -> None:
        self.rooms: dict[str, set[Connection]] = {}
        self.connections: set[Connection] = set()
        self.recent = recent or RecentIds()
        self.empty = asyncio.Event()  # set while no connection is open
        self.empty.set()
        # Called with a user id after an event that may have revoked that user's tokens.
        self.on_revocation: Callable[[str], None] = lambda _user: None
        self._forwarded: dict[str, Any] = {}

    def add(self, connection: Connection) -> None:
        self.connections.add(connection)
        self.empty.clear()
        for room in connection.rooms:
            self.rooms.setdefault(room, set()).add(connection)
        metrics.CONNECTIONS.labels(connection.transport).inc()

    def remove(self, connection: Connection) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        for room in connection.rooms:
            members = self.rooms.get(room)
            if members is not None:
                members.discard(connection)
                if not members:
                    del self.rooms[room]
        metrics.CONNECTIONS.labels(connection.transport).dec()
        if not self.connections:
            self.empty.set()

    def user_connections(self, user_id: str) -> list[Connection]:
        return list(self.rooms.get(f"user:{user_id}", ()))

    def count_user(self, user_id: str) -> int:
        return len(self.rooms.get(f"user:{user_id}", ()))

    def dispatch(self, stream_id: str, fields: dict[str, str]) -> int:
        """One stream entry (`id`, `type`, `event` fields) → the local connections; returns how
        many connections it reached. Never raises: a bad entry is logged and skipped."""
        event_id = fields.get("id")
        if not event_id or not self.recent.add(event_id):
            return 0
        event_type = fields.get("type", "")
        payment = event_type in PAYMENT_EVENTS
        revocation = event_type in REVOCATION_EVENTS
        # Nobody here could receive it (no admin for audit messages): skip the decoding.
        if not (payment or revocation or ADMIN_ROOM in self.rooms):
            return 0
        try:
            raw = json.loads(fields.get("event") or "")
        except ValueError:
            log.warning("unreadable stream entry skipped", stream_id=stream_id, type=event_type)
            return 0
        if not isinstance(raw, dict):
            return 0
        if revocation:
            user_id = revoked_user(raw)
            if user_id is not None and self.count_user(user_id):
                self.on_revocation(user_id)
        reached = 0
        for outbound in map_event(raw, audit=ADMIN_ROOM in self.rooms):
            if not outbound.parties_known:
                log.warning(
                    "payment event without its parties: sent to admins only",
                    event_id=event_id,
                    type=event_type,
                )
            targets: set[Connection] = set()
            for room in outbound.rooms:
                members = self.rooms.get(room)
                if members:
                    targets.update(members)
            if not targets:
                continue
            for connection in targets:
                connection.deliver(stream_id, outbound.event_type, outbound.text)
            reached += len(targets)
            self._count_forwarded(outbound.event_type)
        if reached:
            lag = _lag_seconds(raw.get("occurredAt"))
            if lag is not None:
                metrics.STREAM_LAG.observe(lag)
        return reached

    def _count_forwarded(self, event_type: str) -> None:
        child = self._forwarded.get(event_type)
        if child is None:
            child = self._forwarded[event_type] = metrics.EVENTS_FORWARDED.labels(event_type)
        child.inc()
