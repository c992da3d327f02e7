"""`GET /ws`: the WebSocket endpoint (api-contracts §9.1 to §9.6), on Starlette's `WebSocket`
over uvicorn's websockets protocol (framing, pings and pongs are the library's).

Per connection: the ASGI task reads client messages; everything sent goes through a queue that
a writer task drains (created when there is something to send, gone when the queue is empty,
so an idle connection holds no task of its own). More than 1 MiB waiting → close 1013.
Every refusal happens before the upgrade, as a plain HTTP answer (the ASGI WebSocket Denial
Response extension): never accept-then-close.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from paysys.core.context import request_id_var
from paysys.core.envelope import error_bytes
from paysys.core.logging import get_logger
from paysys.core.middleware import API_CSP, SECURITY_HEADERS, send_error
from paysys.core.timefmt import iso_z
from paysys.core.tokens import Principal
from paysys.gateway.realtime.handshake import Refusal, request_id, target_for_log
from paysys.gateway.realtime.hub import (
    INTERNAL,
    POLICY,
    REASONS,
    SLOW_CONSUMER,
    TOO_BIG,
    UNSUPPORTED,
    Connection,
)
from paysys.gateway.realtime.limits import (
    MAX_INBOUND_BYTES,
    MAX_QUEUED_BYTES,
    MAX_SUBSCRIPTIONS,
    MessageRate,
)
from paysys.gateway.realtime.messages import encode, error_message
from paysys.gateway.realtime.metrics import SENT

if TYPE_CHECKING:
    from paysys.gateway.realtime.service import Realtime

log = get_logger("paysys.gateway.realtime")

# How long a close may wait for the socket to take the close frame (a client that stopped
# reading) before the connection is dropped anyway.
CLOSE_GRACE = 5.0
MAX_ID_LENGTH = 128


def connected_payload(principal: Principal, rooms: tuple[str, ...], connection_id: str) -> dict:
    return {
        "userId": str(principal.id),
        "rooms": list(rooms),
        "connectionId": connection_id,
        "expiresAt": iso_z(datetime.fromtimestamp(principal.expires_at, UTC)),
    }


class WebSocketConnection(Connection):
    transport = "ws"
    __slots__ = (
        "close_code",
        "grace",
        "killed",
        "queue",
        "queued",
        "rate",
        "socket",
        "subscriptions",
        "task",
        "token",
        "writer",
    )

    def __init__(
        self, connection_id: str, principal: Principal, token: str, socket: WebSocket, slot: str
    ) -> None:
        super().__init__(connection_id, principal, slot)
        self.token = token
        self.socket = socket
        self.task = asyncio.current_task()
        self.queue: deque[str] | None = None  # only while something waits to be sent
        self.queued = 0
        self.writer: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.grace: asyncio.TimerHandle | None = None
        self.killed = False
        self.rate: MessageRate | None = None
        self.subscriptions: set[str] | None = None

    # -- sending ---------------------------------------------------------------------------
    def push(self, text: str, type_: str) -> None:
        if self.close_code is not None:
            return
        self._enqueue(text)
        if self.queued > MAX_QUEUED_BYTES:
            self.close(SLOW_CONSUMER)
            return
        SENT.inc(type_)
        if self.writer is None:
            self.writer = asyncio.create_task(self._write())

    def _enqueue(self, text: str) -> None:
        if self.queue is None:
            self.queue = deque()
        self.queue.append(text)
        self.queued += len(text)

    def deliver(self, stream_id: str, event_type: str, text: str) -> None:
        self.push(text, "event")

    async def _write(self) -> None:
        send = self.socket.send
        try:
            while self.queue:
                text = self.queue.popleft()
                self.queued -= len(text)
                await send({"type": "websocket.send", "text": text})
            self.queue = None  # idle again: an idle socket holds no queue
            code = self.close_code
            if code is not None:
                await send({"type": "websocket.close", "code": code, "reason": REASONS[code]})
        except (WebSocketDisconnect, OSError, RuntimeError):
            self.queue = None  # the client is gone: nothing more can be sent
            self.queued = 0
        finally:
            if self.writer is asyncio.current_task():
                self.writer = None

    def close(self, code: int, error_code: str | None = None, message: str = "") -> None:
        if self.close_code is not None:
            return
        self.close_code = code
        if code == SLOW_CONSUMER:
            # What is queued will never be read in time: drop it, and stop waiting for the
            # socket to drain (the writer is blocked on it) so the close frame goes next.
            self.queue = None
            self.queued = 0
            if self.writer is not None:
                self.writer.cancel()
                self.writer = None
        elif error_code is not None:
            self._enqueue(error_message(error_code, message))
            SENT.inc("error")
        if self.writer is None:
            self.writer = asyncio.create_task(self._write())
        self.grace = asyncio.get_running_loop().call_later(CLOSE_GRACE, self._drop)

    def _drop(self) -> None:
        """The close frame could not be sent in time: end the connection's ASGI task (the
        server then closes the socket)."""
        self.grace = None
        if self.task is not None and not self.task.done():
            self.killed = True
            self.task.cancel()

    def finish(self) -> None:
        if self.grace is not None:
            self.grace.cancel()
            self.grace = None
        if self.writer is not None:
            self.writer.cancel()
            self.writer = None


async def deny(scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
    """The refusal as a plain HTTP response with the §1.1 envelope and `Connection: close`
    (the WebSocket scope passes the HTTP middleware by, so its headers are added here)."""
    headers = {
        "connection": "close",
        "x-request-id": request_id_var.get() or "",
        "content-security-policy": API_CSP.decode(),
        **{name.decode(): value.decode() for name, value in SECURITY_HEADERS},
        **{name.decode(): value.decode() for name, value in refusal.headers},
    }
    body = error_bytes(refusal.code, refusal.message)
    response = Response(body, refusal.status, headers=headers, media_type="application/json")
    await WebSocket(scope, receive, send).send_denial_response(response)


class UpgradeRequired:
    """`GET /ws` without a WebSocket upgrade → 426 (the HTTP middleware adds the rest)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(
            send,
            426,
            "UPGRADE_REQUIRED",
            "This endpoint speaks WebSocket only: send Upgrade: websocket",
            [(b"upgrade", b"websocket"), (b"connection", b"close")],
        )


class WebSocketEndpoint:
    """The ASGI app of `WebSocketRoute("/ws")`."""

    def __init__(self, realtime: Realtime) -> None:
        self.realtime = realtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        realtime = self.realtime
        connection_id = request_id(scope)
        request_id_var.set(connection_id)
        socket = WebSocket(scope, receive, send)
        await socket.receive()  # websocket.connect
        path = target_for_log(scope)
        try:
            admission = await realtime.admit(scope, connection_id)
        except Refusal as refusal:
            refusal.log("ws", path)
            await deny(scope, receive, send, refusal)
            return
        connection = WebSocketConnection(
            connection_id, admission.principal, admission.token, socket, admission.slot
        )
        started = time.monotonic()
        code = 1006
        try:
            await socket.accept(headers=[(b"x-request-id", connection_id.encode())])
            # Checked and no longer needed: the headers and query (the token among them) need
            # not stay in memory for the connection's lifetime.
            scope["headers"] = []
            scope["query_string"] = b""
            realtime.opened(connection)
            log.info(
                "realtime connected",
                transport="ws",
                path=path,
                userId=connection.user_id,
                connectionId=connection_id,
            )
            connection.push(
                encode(
                    "connected",
                    connected_payload(admission.principal, connection.rooms, connection_id),
                ),
                "connected",
            )
            code = await self._read(connection, socket)
        except WebSocketDisconnect as gone:
            code = gone.code
        except asyncio.CancelledError:
            if not connection.killed:
                raise
            code = connection.close_code or 1006
        finally:
            connection.finish()
            if connection.close_code is not None:
                code = connection.close_code
            realtime.closed(connection, code, time.monotonic() - started)

    async def _read(self, connection: WebSocketConnection, socket: WebSocket) -> int:
        """Client messages until the connection ends; returns the close code."""
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return int(message.get("code") or 1005)
            if connection.close_code is not None:
                continue  # closing: only waiting for the close handshake now
            text = message.get("text")
            if text is None:
                connection.close(UNSUPPORTED)
                continue
            try:
                await self.handle(connection, text)
            except Exception:
                log.exception("real-time message handling failed", connectionId=connection.id)
                connection.close(INTERNAL)

    async def handle(self, connection: WebSocketConnection, text: str) -> None:
        if len(text) > MAX_INBOUND_BYTES or len(text.encode()) > MAX_INBOUND_BYTES:
            connection.close(TOO_BIG)  # normally refused by the protocol's frame limit already
            return
        now = time.monotonic()
        if connection.rate is None:
            connection.rate = MessageRate(now)
        verdict = connection.rate.hit(now)
        if verdict == "close":
            connection.close(POLICY, "RATE_LIMIT_EXCEEDED", "Too many messages")
            return
        if verdict == "limited":
            connection.push(
                error_message("RATE_LIMIT_EXCEEDED", "Too many messages: at most 20 per 10 s"),
                "error",
            )
            return
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser
            connection.push(error_message("INVALID_JSON", "Message is not valid JSON"), "error")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            connection.push(error_message("VALIDATION_ERROR", "type: must be a string"), "error")
            return
        message_id = message.get("id")
        if message_id is not None and (
            not isinstance(message_id, str) or len(message_id) > MAX_ID_LENGTH
        ):
            connection.push(
                error_message(
                    "VALIDATION_ERROR",
                    f"id: must be a string of at most {MAX_ID_LENGTH} characters",
                ),
                "error",
            )
            return
        kind = message["type"]
        if kind == "ping":
            connection.push(encode("pong", id=message_id), "pong")
        elif kind in ("subscribe", "unsubscribe"):
            await self.subscription(connection, kind, message.get("payload"), message_id)
        else:
            shown = kind[:40]
            connection.push(
                error_message(
                    "VALIDATION_ERROR", f"type: unknown message type '{shown}'", message_id
                ),
                "error",
            )

    async def subscription(
        self, connection: WebSocketConnection, kind: str, payload: Any, message_id: str | None
    ) -> None:
        """§9.3: `{eventType}` is acknowledged (delivery follows rooms); `{room}` only for the
        caller's own rooms and payments it may see; at most 50 subscriptions."""

        def fail(code: str, text: str) -> None:
            connection.push(error_message(code, text, message_id), "error")

        if not isinstance(payload, dict):
            fail("VALIDATION_ERROR", "payload: must be an object with eventType or room")
            return
        event_type, room = payload.get("eventType"), payload.get("room")
        if (event_type is None) == (room is None):
            fail("VALIDATION_ERROR", "payload: exactly one of eventType or room is required")
            return
        value = event_type if room is None else room
        field = "eventType" if room is None else "room"
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
            fail(
                "VALIDATION_ERROR", f"{field}: must be a string of 1 to {MAX_ID_LENGTH} characters"
            )
            return
        key = f"{field}:{value}"
        subscriptions = connection.subscriptions
        if kind == "unsubscribe":
            if subscriptions is not None:
                subscriptions.discard(key)
            connection.push(encode("unsubscribed", payload, id=message_id), "unsubscribed")
            return
        if room is not None:
            refused = await self.realtime.authorize_room(connection, value)
            if refused is not None:
                fail(*refused)
                return
        if subscriptions is None:
            subscriptions = connection.subscriptions = set()
        if key not in subscriptions and len(subscriptions) >= MAX_SUBSCRIPTIONS:
            fail("VALIDATION_ERROR", f"payload: at most {MAX_SUBSCRIPTIONS} subscriptions")
            return
        subscriptions.add(key)
        connection.push(encode("subscribed", payload, id=message_id), "subscribed")


__all__ = ["UpgradeRequired", "WebSocketConnection", "WebSocketEndpoint", "deny"]
