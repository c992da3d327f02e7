"""The shared Redis clients: redis-py for everything, and a pipelined RESP connection for the
one or two commands every request makes (the gateway's rate-limit script, the services'
revocation MGET)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from paysys.core.serving import CoalescingTransport


def create_redis(url: str) -> Redis:
    # Short timeouts: a dead Redis must fail a request fast (and fail open where designed),
    # never hang it. After a Redis restart the pooled sockets are stale: retry quickly on a
    # fresh connection (redis-py's default backoff starts at 1 s, longer than our 2 s health
    # timeout, so the first check after a restart would report Redis down).
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        health_check_interval=15,
        max_connections=200,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def create_pipe(url: str) -> RedisPipe | None:
    """A RedisPipe for `url`, or None where only redis-py can go (rediss://, unix sockets)."""
    try:
        return RedisPipe(url)
    except ValueError:
        return None


class RedisPipe(asyncio.Protocol):
    """One pipelined RESP connection for the hot path: each request writes its command and
    awaits its reply in order (hiredis parses). Many requests share the socket with no pool
    checkout per command: a fraction of redis-py's per-command CPU. Replies are raw (bytes,
    not decoded). Any failure (connect, lost connection, no reply within `timeout`) raises
    redis-py's ConnectionError and an error reply its ResponseError, so callers handle
    RedisError as they do with redis-py."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        parsed = urlsplit(url)
        if parsed.scheme != "redis":
            raise ValueError("only redis:// URLs")
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self.password = unquote(parsed.password) if parsed.password else None
        self.username = unquote(parsed.username) if parsed.username else None
        path = parsed.path.strip("/")
        self.db = int(path) if path else 0
        self.timeout = timeout
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        # Commands written in one loop step (concurrent requests) leave in one send().
        self.transport: CoalescingTransport | None = None
        self._reader: Any = None
        self._lock = asyncio.Lock()
        self._attempts = 0
        self._watch: asyncio.TimerHandle | None = None

    # asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = CoalescingTransport(
            cast(asyncio.Transport, transport), asyncio.get_running_loop()
        )

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self.pending
        while True:
            reply = reader.gets()
            if reply is False:
                return
            future, _ = pending.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        error = OSError("Redis connection lost")
        while self.pending:
            future, _ = self.pending.popleft()
            if not future.done():
                future.set_exception(error)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:  # pragma: no cover - tiny commands
        pass

    def resume_writing(self) -> None:  # pragma: no cover
        pass

    # client -----------------------------------------------------------------------------
    async def _connect(self) -> None:
        attempt = self._attempts
        async with self._lock:
            if self.transport is not None:
                return
            if self._attempts != attempt:
                # The attempt this caller waited for failed: fail with it rather than queue
                # one more connect timeout per waiting request behind the lock.
                raise OSError("Redis unreachable")
            self._attempts += 1
            import hiredis

            loop = asyncio.get_running_loop()
            self._reader = hiredis.Reader()
            await asyncio.wait_for(
                loop.create_connection(lambda: self, self.host, self.port), self.timeout
            )
            if self.password is not None:
                auth: list[str | int | bytes] = (
                    [b"AUTH", self.password]
                    if self.username is None
                    else [b"AUTH", self.username, self.password]
                )
                await self._send(*auth)
            if self.db:
                await self._send(b"SELECT", self.db)

    def _check(self) -> None:
        self._watch = None
        if not self.pending:
            return
        now = time.monotonic()
        oldest = self.pending[0][1]
        if now - oldest >= self.timeout:
            if self.transport is not None:
                self.transport.abort()  # → connection_lost fails every pending call
            else:  # pragma: no cover
                self.connection_lost(None)
            return
        self._watch = asyncio.get_running_loop().call_later(
            self.timeout - (now - oldest), self._check
        )

    def _send(self, *args: str | int | bytes) -> asyncio.Future[Any]:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise OSError("Redis not connected")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.pending.append((future, time.monotonic()))
        transport.write(_pack(args))
        if self._watch is None:
            self._watch = loop.call_later(self.timeout, self._check)
        return future

    async def call(self, *args: str | int | bytes) -> Any:
        try:
            if self.transport is None:
                await self._connect()
            reply = await self._send(*args)
        except (OSError, TimeoutError) as exc:  # refused, lost, or no answer in time
            raise RedisConnectionError(f"Redis unavailable: {exc or type(exc).__name__}") from exc
        if isinstance(reply, Exception):
            raise ResponseError(str(reply))
        return reply

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self.transport is not None:
            self.transport.close()


def _pack(args: tuple[str | int | bytes, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


__all__ = ["RedisError", "RedisPipe", "create_pipe", "create_redis"]
