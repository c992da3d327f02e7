"""Test harness: a fresh PostgreSQL database and a private Redis per run, real apps and processes.

Everything here talks to real servers. The database is created on the PostgreSQL at
TEST_DATABASE_URL (default: DATABASE_URL, else the local default), named per run and dropped
at the end; Redis is a private redis-server on a free port (tests may stop it), or, where no
redis-server binary exists, a spare logical database of REDIS_URL.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support.servers import RedisServer, Stack, free_port

RUN_ID = uuid.uuid4().hex[:10]
_redis_server: RedisServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _redis_server
    base = os.environ.get("TEST_DATABASE_URL") or os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/paysys"
    )
    db_url = make_url(base).set(database=f"paysys_test_{RUN_ID}")
    os.environ["DATABASE_URL"] = db_url.render_as_string(hide_password=False)
    if RedisServer.available():
        _redis_server = RedisServer(free_port(), Path(f"/tmp/paysys-test-redis-{RUN_ID}"))
        _redis_server.start()
        os.environ["REDIS_URL"] = _redis_server.url
    else:  # pragma: no cover - machines without redis-server
        os.environ["REDIS_URL"] = (
            os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")[:-1] + "13"
        )
    os.environ.update(
        {
            "ENV": "test",
            "LOG_LEVEL": os.environ.get("TEST_LOG_LEVEL", "WARNING"),
            "PROCESSOR_DELAY_MS": "50",
            # Many service processes share one PostgreSQL in a run: small pools per process.
            "DB_POOL_SIZE": "4",
            "DB_MAX_OVERFLOW": "6",
            "PYTHONUNBUFFERED": "1",
        }
    )
    from paysys.core.config import get_settings
    from paysys.db import migrate

    get_settings.cache_clear()
    migrate.upgrade(get_settings())


def pytest_unconfigure(config: pytest.Config) -> None:
    from paysys.core.config import get_settings
    from paysys.core.db import drop_database

    try:
        asyncio.run(drop_database(get_settings().database_url))
    finally:
        if _redis_server is not None:
            _redis_server.stop()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The run's private redis-server (tests that stop it must start it again)."""
    if _redis_server is None:  # pragma: no cover
        pytest.skip("no redis-server binary on this machine")
    return _redis_server


@pytest.fixture
def settings():  # type: ignore[no-untyped-def]
    from paysys.core.config import Settings

    return Settings()


ALL_TABLES_SQL = """
SELECT string_agg(format('%I', tablename), ', ') FROM pg_tables
WHERE schemaname = 'public' AND tablename <> 'alembic_version'
"""


@pytest.fixture
async def clean_state() -> AsyncIterator[None]:
    """Empty every table and the Redis database before a test that needs a blank slate."""
    import asyncpg
    from redis.asyncio import Redis

    from paysys.core.config import get_settings
    from paysys.core.db import raw_dsn

    settings = get_settings()
    conn = await asyncpg.connect(raw_dsn(settings.database_url))
    try:
        tables = await conn.fetchval(ALL_TABLES_SQL)
        if tables:
            await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
    redis = Redis.from_url(settings.redis_url)
    await redis.flushdb()
    await redis.aclose()
    yield


AppClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def app_client() -> AsyncIterator[AppClientFactory]:
    """`await app_client("payments", **settings_overrides)` → an httpx client on the in-process
    app with its lifespan running (background workers off unless asked for)."""
    from paysys.core.config import Settings

    async with AsyncExitStack() as stack:

        async def make(service: str, **overrides: object) -> httpx.AsyncClient:
            import importlib

            overrides.setdefault("background_workers", False)
            module = importlib.import_module(f"paysys.{service}.app")
            app = module.create_app(Settings(**overrides))  # type: ignore[arg-type]
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            await stack.enter_async_context(client)
            client.app = app  # type: ignore[attr-defined]
            return client

        yield make


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PORT", None)
    return env


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """A private stack for drills that kill or stall services; stopped after the test."""
    built: list[Stack] = []

    def make(
        names: tuple[str, ...] = ("auth", "payments", "admin", "profile", "gateway"),
        **extra_env: str,
    ) -> Stack:
        new = Stack.build(base_env(), tmp_path / f"stack{len(built)}", names, extra_env)
        built.append(new)
        return new

    yield make
    for item in built:
        item.stop()
