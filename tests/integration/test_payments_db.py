"""The plain-SQL connection helper: never returns a dirty connection, DB down → 503."""

from __future__ import annotations

import json
import uuid
from typing import Any

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


async def test_face_units_sql_matches_money_for_every_currency(settings) -> None:
    """The list's face-value comparison runs in SQL: the same integers as core.money."""
    from paysys.core import money

    engine = create_engine(settings)
    try:
        async with connect(engine) as conn:
            sql = money.face_units_sql("a.amount", "t.currency")
            rows = await conn.fetch(
                f"SELECT t.currency, {sql} AS units "
                "FROM unnest($1::text[]) AS t(currency), (SELECT 7::bigint AS amount) AS a",
                sorted(money.CURRENCIES),
            )
    finally:
        await engine.dispose()
    assert len(rows) == len(money.CURRENCIES)
    for row in rows:
        face = money.format_minor(7, row["currency"])
        assert row["units"] == money.parse_face_units(face), row["currency"]


class _Counting:
    """An asyncpg connection that records each statement it sends (one round trip each)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.conn, name)
        if name not in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
            return attr

        async def counted(sql: str, *args: Any) -> Any:
            self.statements.append(sql)
            return await attr(sql, *args)

        return counted


async def test_create_get_and_list_are_one_statement_each(app_client) -> None:  # type: ignore[no-untyped-def]
    """The hot paths' round trips (docs/benchmarks.md): a create without an Idempotency-Key,
    a get and a list page are ONE statement each, events and history included."""
    from paysys.core.tokens import Principal
    from paysys.payments import service
    from paysys.payments.schemas import ListQuery, parse_create
    from tests.support.payments import events_of, make_user, pg

    await app_client("payments")  # the schema
    alice, bob = await make_user(), await make_user()
    caller = Principal(alice.id, alice.email, alice.name, "CUSTOMER", "j", None, 0, 0)
    data = parse_create(
        {"amount": "5.00", "type": "instant", "description": "One trip", "recipientId": str(bob.id)}
    )
    async with pg() as raw:
        conn = _Counting(raw)
        created = await service.create_payment(
            conn, caller, data, idempotency_key=None, request_fingerprint="", wait_ms=1000
        )
        assert created.status == 201 and len(conn.statements) == 1
        payment = json.loads(created.body)["data"]
        conn.statements.clear()
        got = await service.get_payment(conn, caller, uuid.UUID(payment["id"]))
        assert len(conn.statements) == 1
        assert {k: v for k, v in got.items() if k != "transactions"} == payment
        conn.statements.clear()
        items, total = await service.list_payments(conn, ListQuery(), caller)
        assert len(conn.statements) == 1 and total == 1 and items == [payment]
    (event,) = await events_of(payment["id"])
    assert event["type"] == "payment.created" and event["data"]["payment"] == payment
