"""uvicorn's httptools protocol, with each response leaving in one `send()`.

uvicorn writes a response's status line and headers, then its body, as two transport writes:
two syscalls, two TCP segments and, often, two wake-ups of the reader (the gateway's upstream
client, or the client itself). Here the writes made in one event-loop step are joined and
written once at the end of the step, so a small response costs one `send()`. Once `FLUSH_AT`
bytes are pending they go out at once, so large and streamed responses keep uvicorn's flow
control. (`core.redis.RedisPipe` writes through the same transport, and so does a WebSocket
upgraded from an HTTP connection: `TerminatingWebSocketProtocol` below.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from paysys.core.config import get_settings

FLUSH_AT = 64 * 1024


class CoalescingTransport:
    """A transport that holds the writes of one loop step and hands them over joined."""

    __slots__ = ("_loop", "_pending", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending = [data]
            self._size = len(data)
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)
            self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()  # what was written before close() still goes out, as with a plain transport
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._size = 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else: the real transport
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's `http="httptools"` protocol over a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]


class _Inbox:
    """A WebSocket's receive queue, as uvicorn uses it (`put_nowait`, `get`, `empty`; one
    reader, the ASGI app): a list and at most one future, where an `asyncio.Queue` holds four
    deques (~2.4 KiB per open socket)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class TerminatingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol (framing, ping/pong: the `websockets` library), plus
    the frame-level rules of api-contracts §9.5 that an ASGI app cannot see:

    - no pong within the pong timeout (`ws_ping_timeout`): the connection is terminated
      without a close frame (uvicorn would send close 1011 to a peer that no longer answers);
    - no inbound frame of any kind (message, ping or pong) for `WS_IDLE_TIMEOUT` seconds: the
      same. The app gets `websocket.disconnect` in both cases;
    - a close frame is written even while the peer does not read (flow control paused), so a
      slow consumer still gets its 1013.

    With server pings on, a peer that answers them is never idle and one that does not is
    dropped at the pong timeout, so the idle timer is armed only when pings are off or slower
    than the idle timeout. Memory per open socket matters here (thousands per process): the
    handshake request, which websockets' parser keeps for the connection's lifetime, is
    emptied once the ASGI scope has been built from it, and the receive queue is a list.

    (A plain class, read from settings per connection, so uvicorn's reloader can pickle it.)
    """

    idle_timeout: float | None = None  # None: WS_IDLE_TIMEOUT; 0: no idle timeout

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.last_inbound = self.loop.time()
        self.idle_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self.last_inbound = self.loop.time()
        super().data_received(data)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The scope has copies of what the app needs; drop the request's headers and target
        # (the access token among them): websockets' parser generator holds the request.
        event.headers.clear()
        event.path = ""

    def start_keepalive(self) -> None:  # called once the handshake is accepted
        super().start_keepalive()
        self.response = None  # type: ignore[assignment]  # sent: only the accept needed it
        if self.idle_timeout is None:
            self.idle_timeout = get_settings().ws_idle_timeout
        interval, pong = self.ping_interval or 0.0, self.ping_timeout or 0.0
        pinged = interval > 0 and pong > 0 and interval + pong <= self.idle_timeout
        if self.idle_timeout > 0 and not pinged:
            self.idle_timer = self.loop.call_later(self.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        self.idle_timer = None
        timeout = self.idle_timeout or 0.0
        if self.transport.is_closing() or timeout <= 0:
            return
        idle = self.loop.time() - self.last_inbound
        if idle >= timeout:
            self.transport.abort()
            return
        self.idle_timer = self.loop.call_later(timeout - idle, self._check_idle)

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping_payload = None
        if not self.transport.is_closing():
            self.transport.abort()

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.close" and not self.writable.is_set():
            # A close never waits for a peer that stopped reading (the slow-consumer cut-off,
            # 1013): the small frame is queued behind what is already buffered for it.
            self.writable.set()
            try:
                await super().send(message)
            finally:
                if not self.disconnected:
                    self.writable.clear()
            return
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # The denial response is on the wire: the handshake is over. (uvicorn leaves the
            # flag unset and logs "returned without completing handshake" at ERROR for every
            # refused handshake: Kludex/uvicorn#3138.)
            self.handshake_complete = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        super().connection_lost(exc)
