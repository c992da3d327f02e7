"""The shared Redis clients: redis-py for everything, and a pipelined RESP connection for the
one or two commands every request makes (the gateway's rate-limit script, the services'
revocation MGET)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Union, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from paysys.core.logging import get_logger
from paysys.core.serving import CoalescingTransport

log = get_logger("paysys.redis")


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


HotPathRedis = Union[Redis, "RedisPipe"]
"""What per-request code holds: a RedisPipe, or redis-py where no pipe can go. Both answer
`mget`, `evalsha` and `script_load` alike (the pipe's replies are bytes, redis-py's str)."""


def hot_path_client(pipe: RedisPipe | None, redis: Redis) -> HotPathRedis:
    return pipe if pipe is not None else redis


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
        self._ready = False  # connected and the handshake (AUTH, SELECT) answered OK
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
        self._ready = False
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
        """Connect and run the handshake (AUTH, SELECT) before anyone else may write.

        `transport` is set by `connection_made` as soon as TCP is up, but callers only write
        once `_ready` is set, after both handshake replies were checked: a command written
        earlier would run unauthenticated or in database 0 (a revoked token read as clean).
        Callers arriving meanwhile wait on the lock, then share the outcome."""
        attempt = self._attempts
        async with self._lock:
            if self._ready:
                return
            if self._attempts != attempt:
                # The attempt this caller waited for failed: fail with it rather than queue
                # one more connect timeout per waiting request behind the lock.
                raise OSError("Redis unreachable")
            self._attempts += 1
            loop = asyncio.get_running_loop()
            self._reader = hiredis.Reader()
            await asyncio.wait_for(
                loop.create_connection(lambda: self, self.host, self.port), self.timeout
            )
            handshake: list[tuple[str, asyncio.Future[Any]]] = []
            if self.password is not None:
                auth: list[str | int | bytes] = [b"AUTH", self.password]
                if self.username is not None:
                    auth.insert(1, self.username)
                handshake.append(("AUTH", self._send(*auth)))
            if self.db:
                handshake.append(("SELECT", self._send(b"SELECT", self.db)))
            for command, future in handshake:
                reply = await future
                if isinstance(reply, Exception):
                    self._drop()
                    if command == "AUTH":
                        log.error("redis refused the credentials", host=self.host, port=self.port)
                        raise AuthenticationError(f"Redis AUTH failed: {reply}")
                    raise ResponseError(f"Redis {command} {self.db} failed: {reply}")
            self._ready = True

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.transport = None

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
            if not self._ready:
                await self._connect()
            reply = await self._send(*args)
        except (OSError, TimeoutError) as exc:  # refused, lost, or no answer in time
            raise RedisConnectionError(f"Redis unavailable: {exc or type(exc).__name__}") from exc
        if isinstance(reply, Exception):
            message = str(reply)
            raise (
                NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)
            )
        return reply

    # The redis-py methods the hot paths use, with the same signatures, so a caller holds
    # either client (`hot_path_client`) and never asks which.
    async def mget(self, keys: list[str]) -> list[bytes | None]:
        result: list[bytes | None] = await self.call(b"MGET", *keys)
        return result

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: str | int) -> Any:
        return await self.call(b"EVALSHA", sha, numkeys, *keys_and_args)

    async def script_load(self, script: str) -> str:
        sha: bytes = await self.call(b"SCRIPT", b"LOAD", script)
        return sha.decode()

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


__all__ = [
    "HotPathRedis",
    "RedisError",
    "RedisPipe",
    "create_pipe",
    "create_redis",
    "hot_path_client",
]
