"""`GET /api/events/stream`: the same messages as Server-Sent Events (api-contracts §9.8).

Served by the gateway itself (ProxyMiddleware lets this path through) and streamed through the
pure-ASGI middleware (request id, security headers, CORS) without buffering: each batch of
frames is one `http.response.body` message. Frames: `retry: 3000`, `event: connected`, then
`id: <stream id>` / `event: <eventType>` / `data: <the WebSocket message>` per event, and a
`: ping` comment every 15 s. `Last-Event-ID` replays what the caller missed from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from typing import TYPE_CHECKING

from starlette.types import Message, Receive, Scope, Send

from paysys.core.context import request_id_var
from paysys.core.events.transport import REDIS_DOWN
from paysys.core.logging import get_logger
from paysys.core.middleware import header, send_error
from paysys.core.tokens import Principal
from paysys.gateway.realtime.handshake import Refusal, query_param, request_id, target_for_log
from paysys.gateway.realtime.hub import SLOW_CONSUMER, Connection
from paysys.gateway.realtime.limits import MAX_QUEUED_BYTES
from paysys.gateway.realtime.messages import (
    EVENT_TYPES,
    SYNC_RESET,
    encode,
    error_message,
    map_event,
    reset_message,
)
from paysys.gateway.realtime.metrics import SENT
from paysys.gateway.realtime.stream import Entry, newest_id, replay, stream_id_key
from paysys.gateway.realtime.ws import connected_payload

if TYPE_CHECKING:
    from paysys.gateway.realtime.service import Realtime

log = get_logger("paysys.gateway.realtime")

PING_INTERVAL = 15.0
RETRY_MS = 3000
CLIENT_GONE = 1005
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


def frame(event: str, data: str, stream_id: str | None = None) -> str:
    head = f"id: {stream_id}\n" if stream_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


class SseConnection(Connection):
    transport = "sse"
    __slots__ = (
        "after",
        "close_code",
        "frames",
        "held",
        "killed",
        "queued",
        "task",
        "types",
        "wake",
    )

    def __init__(
        self, connection_id: str, principal: Principal, types: frozenset[str] | None, slot: str
    ) -> None:
        super().__init__(connection_id, principal, slot)
        self.types = types
        self.frames: deque[str] = deque()
        self.queued = 0
        self.wake = asyncio.Event()
        self.close_code: int | None = None
        # Live events held back while a `Last-Event-ID` replay is read from the stream.
        self.held: list[tuple[str, str, str]] | None = None
        # After a replay: live events up to here were replayed already (the reader may lag).
        self.after: tuple[int, int] | None = None
        self.task = asyncio.current_task()
        self.killed = False

    def wanted(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types

    def deliver(self, stream_id: str, event_type: str, text: str) -> None:
        if self.close_code is not None or not self.wanted(event_type):
            return
        if self.held is not None:
            self.held.append((stream_id, event_type, text))
            return
        if self.after is not None:
            if stream_id_key(stream_id) <= self.after:
                return
            self.after = None  # the live feed has passed the replay
        self.queue(frame(event_type, text, stream_id), "event")

    def queue(self, text: str, type_: str) -> None:
        self.frames.append(text)
        self.queued += len(text)
        if self.queued > MAX_QUEUED_BYTES:
            self.close(SLOW_CONSUMER)
            return
        SENT.inc(type_)
        self.wake.set()

    def close(self, code: int, error_code: str | None = None, message: str = "") -> None:
        if self.close_code is not None:
            return
        self.close_code = code
        if code == SLOW_CONSUMER:
            # The response is stuck behind a client that does not read: give up on it.
            self.frames.clear()
            self.queued = 0
            if self.task is not None and not self.task.done():
                self.killed = True
                self.task.cancel()
            return
        if error_code is not None:
            self.frames.append(frame("error", error_message(error_code, message)))
            SENT.inc("error")
        self.wake.set()

    def gone(self) -> None:
        if self.close_code is None:
            self.close_code = CLIENT_GONE
            self.wake.set()

    def take(self) -> bytes:
        body = "".join(self.frames).encode()
        self.frames.clear()
        self.queued = 0
        return body


def replayed_frames(connection: SseConnection, entries: list[Entry]) -> list[str]:
    """The caller's events among `entries`, filtered for its identity as live delivery is."""
    rooms = set(connection.rooms)
    seen: set[str] = set()
    frames: list[str] = []
    for stream_id, fields in entries:
        event_id = fields.get("id", "")
        if event_id in seen:
            continue
        seen.add(event_id)
        try:
            raw = json.loads(fields.get("event") or "")
        except ValueError:
            continue
        if not isinstance(raw, dict):
            continue
        for outbound in map_event(raw):
            if rooms.intersection(outbound.rooms) and connection.wanted(outbound.event_type):
                frames.append(frame(outbound.event_type, outbound.text, stream_id))
    return frames


def parse_request(scope: Scope) -> tuple[frozenset[str] | None, str | None]:
    """`?types=` and `Last-Event-ID` (header, or `lastEventId` in the query); raises Refusal."""
    types: frozenset[str] | None = None
    raw_types = query_param(scope, "types")
    if raw_types is not None:
        wanted = frozenset(item.strip() for item in raw_types.split(",") if item.strip())
        unknown = sorted(wanted - EVENT_TYPES)
        if unknown or not wanted:
            raise Refusal(
                400,
                "VALIDATION_ERROR",
                f"types: unknown event type '{unknown[0][:40]}'" if unknown else "types: empty",
                "validation",
            )
        types = wanted
    last_id = header(scope, b"last-event-id") or query_param(scope, "lastEventId")
    if last_id is not None:
        last_id = last_id.strip()
        try:
            stream_id_key(last_id)
        except ValueError:
            raise Refusal(
                400, "VALIDATION_ERROR", "Last-Event-ID: must be a stream entry id", "validation"
            ) from None
    return types, last_id


class EventStreamEndpoint:
    """The ASGI app of `Route("/api/events/stream")`."""

    def __init__(self, realtime: Realtime) -> None:
        self.realtime = realtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        realtime = self.realtime
        connection_id = request_id_var.get() or request_id(scope)  # set by RequestContext
        path = target_for_log(scope)
        try:
            types, last_id = parse_request(scope)
            admission = await realtime.admit(scope, connection_id)
        except Refusal as refusal:
            refusal.log("sse", path)
            await send_error(
                send,
                refusal.status,
                refusal.code,
                refusal.message,
                [*refusal.headers, (b"connection", b"close")],
            )
            return
        connection = SseConnection(connection_id, admission.principal, types, admission.slot)
        started = time.monotonic()
        watcher = asyncio.create_task(_watch_disconnect(receive, connection))
        code = CLIENT_GONE
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            connected = encode(
                "connected", connected_payload(admission.principal, connection.rooms, connection_id)
            )
            connection.frames.append(f"retry: {RETRY_MS}\n\n" + frame("connected", connected))
            SENT.inc("connected")
            if last_id is not None:
                connection.held = []
            realtime.opened(connection)
            log.info(
                "realtime connected",
                transport="sse",
                path=path,
                userId=connection.user_id,
                connectionId=connection_id,
            )
            if last_id is not None:
                await self.resume(connection, last_id)
            code = await self.pump(connection, send)
        except asyncio.CancelledError:
            if not connection.killed:
                raise
            code = SLOW_CONSUMER
        except OSError:  # the client went away mid-write
            code = CLIENT_GONE
        finally:
            watcher.cancel()
            realtime.closed(connection, code, time.monotonic() - started)

    async def resume(self, connection: SseConnection, last_id: str) -> None:
        """Replay what came after `last_id`, then let the held live events through (those the
        replay already covered dropped), in stream order."""
        redis = self.realtime.stream_redis
        try:
            entries = await replay(redis, last_id) if redis is not None else None
            newest = await newest_id(redis) if entries is None and redis is not None else None
        except REDIS_DOWN:
            entries, newest = None, None
        held = connection.held or []
        connection.held = None
        if entries is None:
            connection.queue(frame("reset", reset_message(), newest), SYNC_RESET)
            covered = stream_id_key(newest) if newest else (0, 0)
        else:
            for text in replayed_frames(connection, entries):
                connection.queue(text, "event")
            covered = stream_id_key(entries[-1][0]) if entries else stream_id_key(last_id)
        connection.after = covered
        for stream_id, event_type, text in held:
            connection.deliver(stream_id, event_type, text)

    async def pump(self, connection: SseConnection, send: Send) -> int:
        """Write queued frames as they come, a `: ping` when idle; returns the end's code."""
        wake = connection.wake
        while True:
            if not connection.frames and connection.close_code is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PING_INTERVAL):
                        await wake.wait()
                if not connection.frames and connection.close_code is None:
                    connection.frames.append(": ping\n\n")
            wake.clear()
            code = connection.close_code
            if code == CLIENT_GONE:
                return code
            if connection.frames:
                body = connection.take()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if code is not None:
                await send({"type": "http.response.body", "body": b""})
                return code


async def _watch_disconnect(receive: Receive, connection: SseConnection) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            connection.gone()
            return
