"""core.redis.RedisPipe: the hand-written RESP client on the revocation path (security).

Guards the connect handshake: a command written before AUTH/SELECT would run unauthenticated
or in database 0, where a revoked token's mark is absent (read as "not revoked").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError

from paysys.core.config import Settings
from paysys.core.redis import RedisPipe
from paysys.core.revocation import REVOKED_JTI_KEY, is_revoked
from paysys.core.tokens import Principal
from tests.support.servers import RedisServer, free_port

PASSWORD = "pipe-test-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    """A private redis-server that requires a password."""
    if not RedisServer.available():  # pragma: no cover
        pytest.skip("no redis-server binary on this machine")
    server = RedisServer(
        free_port(),
        Path(f"/tmp/paysys-pipe-{uuid.uuid4().hex[:8]}"),
        extra_args=("--requirepass", PASSWORD),
    )
    server.start()
    yield server
    server.stop()


def _url(db: int) -> str:
    """The run's own Redis (no password), database `db`."""
    return Settings().redis_url.rsplit("/", 1)[0] + f"/{db}"


def _principal() -> Principal:
    return Principal(uuid.uuid4(), "a@example.com", "A", "CUSTOMER", str(uuid.uuid4()), None, 1, 2)


async def _race(pipe: RedisPipe, keys: list[str], racers: int = 40) -> list[list[bytes | None]]:
    """One call starts the connect; `racers` more are issued at the first loop steps after the
    TCP connection exists (the window in which the handshake may not have been written yet)."""

    async def racer() -> list[bytes | None]:
        while pipe.transport is None:
            await asyncio.sleep(0)
        return await pipe.mget(keys)

    waiting = [asyncio.create_task(racer()) for _ in range(racers)]
    await asyncio.sleep(0)
    first = asyncio.create_task(pipe.mget(keys))
    return await asyncio.gather(first, *waiting)


@pytest.mark.parametrize("db", [0, 7])
async def test_concurrent_connect_with_password_and_database(
    locked_redis: RedisServer, db: int
) -> None:
    principal = _principal()
    key = REVOKED_JTI_KEY.format(principal.jti)
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_redis.port}/{db}"
    async with Redis.from_url(url) as admin:
        await admin.set(key, "1", ex=60)
    pipe = RedisPipe(url)
    try:
        results = await _race(pipe, [key])
        assert results == [[b"1"]] * len(results)
        assert await is_revoked(pipe, principal)  # the security question itself
    finally:
        pipe.close()


async def test_concurrent_connect_selects_the_database_first() -> None:
    """No password, database N: every early caller reads database N, never 0."""
    principal = _principal()
    key = REVOKED_JTI_KEY.format(principal.jti)
    url = _url(5)
    async with Redis.from_url(url) as admin:
        await admin.set(key, "1", ex=60)
    pipe = RedisPipe(url)
    try:
        results = await _race(pipe, [key])
        assert results == [[b"1"]] * len(results)
    finally:
        pipe.close()


async def test_wrong_password_is_reported(locked_redis: RedisServer) -> None:
    pipe = RedisPipe(f"redis://:wrong@127.0.0.1:{locked_redis.port}/0")
    try:
        results = await asyncio.gather(
            *(pipe.mget(["k"]) for _ in range(5)), return_exceptions=True
        )
        assert isinstance(results[0], AuthenticationError)
        assert "AUTH" in str(results[0])
        assert all(isinstance(r, Exception) for r in results)
        with pytest.raises(AuthenticationError):  # a later call tries again, and says why
            await pipe.mget(["k"])
    finally:
        pipe.close()


async def test_missing_database_is_reported() -> None:
    pipe = RedisPipe(_url(999))
    try:
        with pytest.raises(ResponseError, match="SELECT 999"):
            await pipe.mget(["k"])
    finally:
        pipe.close()


async def test_evalsha_and_script_load_match_redis_py() -> None:
    pipe = RedisPipe(_url(0))
    try:
        async with Redis.from_url(_url(0)) as redis:
            sha = await pipe.script_load("return ARGV[1]")
            assert sha == await redis.script_load("return ARGV[1]")
        assert await pipe.evalsha(sha, 0, "hello") == b"hello"
    finally:
        pipe.close()
