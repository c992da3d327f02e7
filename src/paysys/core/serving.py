"""uvicorn's httptools protocol, with each response leaving in one `send()`, and the limits
uvicorn does not enforce (api-contracts §2.1).

Coalescing: uvicorn writes a response's status line and headers, then its body, as two
transport writes: two syscalls, two TCP segments and, often, two wake-ups of the reader (the
gateway's upstream client, or the client itself). Here the writes made in one event-loop step
are joined and written once at the end of the step, so a small response costs one `send()`.
Once `FLUSH_AT` bytes are pending they go out at once, so large and streamed responses keep
uvicorn's flow control. (`core.redis.RedisPipe` writes through the same transport, and so does
a WebSocket upgraded from an HTTP connection: `TerminatingWebSocketProtocol` below.)

Limits (`core.edgelimits.EdgeLimits`; uvicorn itself only offers the idle keep-alive timeout
and `limit_concurrency`, both used by `paysys.cli.serve.server_options`):
- absolute deadlines: request line + headers within `header_timeout` of the connection's start
  (first request) or of the request's first byte (later ones); the whole body within
  `body_timeout` of the end of the headers. A client trickling bytes does not extend them.
  Missed → 408 `REQUEST_TIMEOUT` and the connection is closed (a connection that never sent a
  byte is just closed);
- a header block over `max_header_bytes` → 431 `HEADERS_TOO_LARGE`, closed (counted as it
  arrives, so a header that never ends is refused too);
- at most `max_connections_per_client` open connections per client IP (IPv6 per /64; trusted
  proxies are not capped): a connection over it is closed at once;
- the process-wide cap is uvicorn's `limit_concurrency`, answered with the 503 envelope here.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from paysys.core.config import get_settings
from paysys.core.edgelimits import REFUSED, EdgeLimits, refusal, server_busy, settings_limits

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


# Where a connection is in its current request (deadlines and header counting depend on it).
_FIRST, _HEADERS, _BODY, _IDLE, _DONE = range(5)

_open_by_client: weakref.WeakKeyDictionary[ServerState, Counter[str]] = weakref.WeakKeyDictionary()


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's `http="httptools"` protocol over a `CoalescingTransport`, enforcing `limits`:
    this process's settings by default, so the class stays importable by name (uvicorn's reload
    mode pickles it into the server subprocess); `configured(limits)` for other limits."""

    limits: ClassVar[EdgeLimits | None] = None

    @classmethod
    def configured(cls, limits: EdgeLimits) -> type[CoalescingHttpToolsProtocol]:
        subclass = type(cls.__name__, (cls,), {"limits": limits})
        return cast(type[CoalescingHttpToolsProtocol], subclass)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = type(self).limits or settings_limits()
        self._phase = _FIRST
        self._deadline: asyncio.TimerHandle | None = None
        self._due = 0.0  # when the current phase (headers or body) must be over (loop time)
        self._header_bytes = 0  # an upper bound of the current header block's size
        self._chunk = 0  # size of the data being parsed
        self._began_in_chunk = False
        self._client_key: str | None = None
        self._oversized = False
        self._upgrading = False

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        key = self._limits.client_of(self.client[0]) if self.client else None
        if key is not None:
            open_here = _open_by_client.setdefault(self.server_state, Counter())
            if open_here[key] >= self._limits.max_connections_per_client:
                REFUSED.labels("per_client").inc()
                self._phase = _DONE
                self.transport.close()
                return
            open_here[key] += 1
            self._client_key = key
        # The first request's headers are due from the connection's start (a connection that
        # sends nothing is closed then).
        self._due = self.loop.time() + self._limits.header_timeout
        self._deadline = self.loop.call_at(self._due, self._deadline_passed)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._uncount()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == _DONE:
            return
        self._chunk = len(data)
        self._began_in_chunk = False
        if self._phase == _HEADERS:
            self._header_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._oversized or self._headers_too_large():
            self._refuse("headers_too_large", 431, "HEADERS_TOO_LARGE", "Request headers too large")
            return
        # A deadline timer only for a request that did not arrive whole in this chunk (most
        # do): its due time was fixed when the phase began, so waiting does not extend it.
        if self._phase in (_HEADERS, _BODY) and self._deadline is None and not self._upgrading:
            self._deadline = self.loop.call_at(self._due, self._deadline_passed)

    def _headers_too_large(self) -> bool:
        """Headers still incomplete after this chunk and already over the limit?"""
        if self._phase != _HEADERS or self._header_bytes <= self._limits.max_header_bytes:
            return False
        if self._began_in_chunk:  # the bound counted bytes of the previous request too
            self._header_bytes = self._known_header_bytes()
        return self._header_bytes > self._limits.max_header_bytes

    def _known_header_bytes(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def handle_websocket_upgrade(self) -> None:
        # From here on the WebSocket protocol owns the connection (and its own limits, §9.5).
        self._disarm()
        self._uncount()
        self._unset_keepalive_if_required()
        self._phase = _DONE
        super().handle_websocket_upgrade()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # Over `limit_concurrency`: the 503 envelope instead of uvicorn's plain-text answer.
        if app is service_unavailable:
            REFUSED.labels("busy").inc()
            app = server_busy
        super()._start_asgi_task(cycle, app)

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase != _FIRST:  # the first request's headers are due from the connection
            self._due = self.loop.time() + self._limits.header_timeout
        self._phase = _HEADERS
        self._upgrading = False
        self._header_bytes = self._chunk  # at most the rest of this chunk so far
        self._began_in_chunk = True

    def on_headers_complete(self) -> None:
        self._disarm()
        if (
            self._header_bytes > self._limits.max_header_bytes
            and self._known_header_bytes() > self._limits.max_header_bytes
        ):
            self._oversized = True  # answered by data_received once the parser returns
            self._phase = _DONE
            return
        self._phase = _BODY
        self._due = self.loop.time() + self._limits.body_timeout
        self._upgrading = self.parser.should_upgrade() and self._should_upgrade()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._phase == _BODY:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._phase != _BODY:
            return
        self._disarm()
        self._phase = _IDLE
        super().on_message_complete()
        cycle = self.cycle
        if (
            not self._upgrading
            and cycle is not None
            and cycle.response_complete
            and not self.pipeline
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
        ):
            # Answered before its body ended: the keep-alive timer armed by the answer was
            # cancelled by the body's bytes, so arm it again now that the request is over.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    # -- limits ----------------------------------------------------------------------------

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _uncount(self) -> None:
        key, self._client_key = self._client_key, None
        if key is not None:
            open_here = _open_by_client.get(self.server_state)
            if open_here is not None:
                open_here[key] -= 1
                if open_here[key] <= 0:
                    del open_here[key]

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self._phase == _FIRST:  # not one byte since the connection opened: just close
            REFUSED.labels("header_timeout").inc()
            self._phase = _DONE
            self.transport.close()
        elif self._phase == _HEADERS:
            self._refuse("header_timeout", 408, "REQUEST_TIMEOUT", "Request headers took too long")
        elif self._phase == _BODY:
            self._refuse("body_timeout", 408, "REQUEST_TIMEOUT", "Request body took too long")

    def _refuse(self, reason: str, status: int, code: str, message: str) -> None:
        """Answer `status` and close, unless another response is already on its way on this
        connection (then only close); the app of an unfinished request sees a disconnect."""
        REFUSED.labels(reason).inc()
        self._phase = _DONE
        self._disarm()
        cycle = self.cycle
        answer = True
        if cycle is not None and not cycle.response_complete:
            # Only a late body is this cycle's own request; otherwise an earlier response is
            # still being written and an answer would land in the middle of it.
            answer = reason == "body_timeout" and not self.pipeline and not cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
        if answer and not self.transport.is_closing():
            self.transport.write(refusal(status, code, message))
        self.transport.close()


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
