"""The plain-SQL connection helper: never returns a dirty connection, DB down → 503."""

from __future__ import annotations

import pytest

from paysys.core.config import Settings
from paysys.core.db import create_engine
from paysys.core.errors import AppError
from paysys.payments.db import connect


async def test_connection_left_in_a_transaction_is_dropped(settings) -> None:
    engine = create_engine(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}))
    try:
        async with connect(engine) as conn:
            await conn.execute("BEGIN")
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        async with connect(engine) as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid
        async with connect(engine) as conn:
            same = await conn.fetchval("SELECT pg_backend_pid()")
        async with connect(engine) as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == same  # clean ones are reused
    finally:
        await engine.dispose()


async def test_unreachable_database_is_503() -> None:
    engine = create_engine(Settings(database_url="postgresql://postgres@127.0.0.1:1/nothing"))
    try:
        with pytest.raises(AppError) as info:
            async with connect(engine):
                pass
        assert info.value.status == 503 and info.value.code == "SERVICE_UNAVAILABLE"
    finally:
        await engine.dispose()
