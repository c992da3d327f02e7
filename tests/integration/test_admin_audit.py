"""The audit log: written only by the admin consumer from events, one row per event (catch-up
after downtime, redelivery), and its list/filter/actions API."""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from paysys.admin.audit import ACTIONS, record_audit
from tests.support.admin import admin_and_token, event, fetch, insert_user, poll


@pytest.fixture
async def client(app_client, clean_state):  # type: ignore[no-untyped-def]
    return await app_client("admin")


async def record(*events) -> None:  # type: ignore[no-untyped-def]
    from paysys.core.config import get_settings
    from paysys.core.db import create_engine, create_sessionmaker

    engine = create_engine(get_settings())
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            for item in events:
                await record_audit(session, item)
    finally:
        await engine.dispose()


async def audit_count() -> int:
    return int((await fetch("SELECT count(*) AS n FROM audit_logs"))[0]["n"])


# --- record_audit ------------------------------------------------------------------------------


async def test_record_audit_is_idempotent_by_event_id(clean_state) -> None:  # type: ignore[no-untyped-def]
    user_id = uuid.uuid4()
    login = event(
        "user.logged_in",
        {"userId": str(user_id), "ip": "10.0.0.7", "userAgent": "curl/8"},
        correlation_id="req-1",
    )
    await record(login)
    await record(login, login)
    rows = await fetch("SELECT * FROM audit_logs")
    assert len(rows) == 1
    row = rows[0]
    assert row["action"] == "USER_LOGIN" and row["event_id"] == login.id
    assert row["actor_id"] == user_id  # a login is done by the user itself
    assert row["resource_type"] == "user" and row["resource_id"] == str(user_id)
    assert row["ip"] == "10.0.0.7" and row["user_agent"] == "curl/8"
    assert row["correlation_id"] == "req-1"
    assert row["created_at"] == login.occurred_at


async def test_audit_list_shape_filters_and_actor(client) -> None:  # type: ignore[no-untyped-def]
    admin, headers = await admin_and_token(name="Ada Admin")
    customer = await insert_user()
    base = datetime(2026, 3, 10, 12, tzinfo=UTC)
    payment_id = uuid.uuid4()
    events = [
        event(
            "user.created",
            {"user": {"id": str(customer["id"]), "email": customer["email"]}, "via": "register"},
            occurred_at=base,
            actor_id=str(customer["id"]),
        ),
        event(
            "user.role_changed",
            {"userId": str(customer["id"]), "oldRole": "CUSTOMER", "newRole": "VENDOR"},
            occurred_at=base + timedelta(days=1),
            actor_id=str(admin["id"]),
            correlation_id="abc-123",
        ),
        event(
            "payment.created",
            {
                "payment": {
                    "id": str(payment_id),
                    "status": "pending",
                    "amount": "1.00",
                    "currency": "USD",
                }
            },
            occurred_at=base + timedelta(days=2),
            actor_id=str(customer["id"]),
        ),
        event(
            "config.updated",
            {"key": "payment.maxAmount", "oldValue": "100000000.00", "newValue": "5000.00"},
            occurred_at=base + timedelta(days=3),
            actor_id=str(admin["id"]),
        ),
        event(
            "user.login_failed",
            {"email": "who@example.com", "ip": "10.1.1.1", "reason": "bad_password"},
            occurred_at=base + timedelta(days=4),
        ),
    ]
    await record(*events)

    r = await client.get("/api/admin/audit-logs", headers=headers)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["pagination"]["total"] == 5
    logs = data["auditLogs"]
    assert [log["action"] for log in logs] == [
        "USER_LOGIN_FAILED",
        "SYSTEM_CONFIG_CHANGED",
        "PAYMENT_CREATED",
        "USER_ROLE_CHANGED",
        "USER_REGISTERED",
    ]
    role = logs[3]
    assert set(role) == {
        "id",
        "action",
        "actorId",
        "actor",
        "resourceType",
        "resourceId",
        "details",
        "ip",
        "userAgent",
        "correlationId",
        "eventId",
        "createdAt",
    }
    assert role["actor"] == {"id": str(admin["id"]), "email": admin["email"], "name": "Ada Admin"}
    assert role["details"] == {
        "userId": str(customer["id"]),
        "oldRole": "CUSTOMER",
        "newRole": "VENDOR",
    }
    assert role["correlationId"] == "abc-123" and role["eventId"] == str(events[1].id)
    assert role["createdAt"] == "2026-03-11T12:00:00.000Z"
    failed = logs[0]
    assert failed["actorId"] is None and failed["actor"] is None and failed["ip"] == "10.1.1.1"
    assert logs[1]["resourceType"] == "config" and logs[1]["resourceId"] == "payment.maxAmount"

    async def actions(**params: str) -> list[str]:
        r = await client.get("/api/admin/audit-logs", headers=headers, params=params)
        assert r.status_code == 200, r.text
        return [log["action"] for log in r.json()["data"]["auditLogs"]]

    assert await actions(action="PAYMENT_CREATED") == ["PAYMENT_CREATED"]
    assert await actions(action="payment_created") == ["PAYMENT_CREATED"]
    assert await actions(actorId=str(admin["id"])) == ["SYSTEM_CONFIG_CHANGED", "USER_ROLE_CHANGED"]
    assert await actions(resourceType="user", resourceId=str(customer["id"])) == [
        "USER_ROLE_CHANGED",
        "USER_REGISTERED",
    ]
    assert await actions(resourceType="PAYMENT") == ["PAYMENT_CREATED"]
    # Plain end date covers the whole day; start inclusive.
    assert await actions(startDate="2026-03-11", endDate="2026-03-12") == [
        "PAYMENT_CREATED",
        "USER_ROLE_CHANGED",
    ]
    assert await actions(endDate="2026-03-10T12:00:00Z") == ["USER_REGISTERED"]
    assert await actions(order="asc", limit="2") == ["USER_REGISTERED", "USER_ROLE_CHANGED"]
    r = await client.get("/api/admin/audit-logs", headers=headers, params={"page": 3, "limit": 2})
    assert r.json()["data"]["pagination"] == {
        "page": 3,
        "limit": 2,
        "total": 5,
        "totalPages": 3,
        "hasMore": False,
    }


BAD_AUDIT_QUERIES = [
    {"action": "NOT_AN_ACTION"},
    {"action": "drop table"},
    {"actorId": "nope"},
    {"resourceType": "planet"},
    {"startDate": "yesterday"},
    {"endDate": "2026-13-01"},
    {"startDate": "2026-02-02", "endDate": "2026-02-01"},
    {"limit": "1000"},
    {"sort": "ip"},
    {"user": "x"},
    {"page": "٣"},
    {"limit": "²"},
    {"resourceId": "a\x00b"},  # PostgreSQL cannot compare NUL: 400, not 500
    {"actorId": "{" + "0" * 32 + "}"},  # a UUID in the documented form only
    [("action", "USER_LOGIN"), ("action", "USER_LOGOUT")],
]


async def test_audit_list_rejects_bad_filters(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    for params in BAD_AUDIT_QUERIES:
        r = await client.get("/api/admin/audit-logs", headers=headers, params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_actions_lists_the_contract_and_newer_ones(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    r = await client.get("/api/admin/audit-logs/actions", headers=headers)
    assert r.status_code == 200
    assert r.json()["data"]["actions"] == list(ACTIONS)
    assert len(ACTIONS) == 17
    await record(event("widget.exploded", {"widgetId": "w1"}))
    actions = (await client.get("/api/admin/audit-logs/actions", headers=headers)).json()["data"][
        "actions"
    ]
    assert actions[-1] == "WIDGET_EXPLODED"
    r = await client.get(
        "/api/admin/audit-logs", headers=headers, params={"action": "WIDGET_EXPLODED"}
    )
    assert r.json()["data"]["pagination"]["total"] == 1


# --- through the event hub: real relay + consumer ------------------------------------------


async def _start(stack: AsyncExitStack, service: str, **overrides: object) -> httpx.AsyncClient:
    import importlib

    from paysys.core.config import Settings

    module = importlib.import_module(f"paysys.{service}.app")
    app = module.create_app(Settings(background_workers=True, **overrides))  # type: ignore[arg-type]
    await stack.enter_async_context(app.router.lifespan_context(app))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    return await stack.enter_async_context(
        httpx.AsyncClient(transport=transport, base_url="http://testserver")
    )


async def _produce(count: int) -> list[uuid.UUID]:
    """`count` events committed through the shared user domain (the real producers)."""
    from paysys.core.config import get_settings
    from paysys.core.db import create_engine, create_sessionmaker
    from paysys.core.events.outbox import emit
    from paysys.users import accounts

    engine = create_engine(get_settings())
    ids = []
    try:
        async with create_sessionmaker(engine)() as session:
            for i in range(count):
                evt = await emit(
                    session,
                    "config.updated",
                    {"key": "maintenance.message", "oldValue": "", "newValue": f"m{i}"},
                )
                ids.append(evt.id)
            user = await accounts.create_user(
                session,
                email=f"catchup-{uuid.uuid4().hex[:6]}@example.com",
                password="TestPassword123!",
                name="Catch Up",
                role="CUSTOMER",
                via="register",
            )
            assert user.id
            await session.commit()
    finally:
        await engine.dispose()
    return ids


async def _group_settled() -> bool:
    """The admin group has read everything in the stream and has nothing pending."""
    from redis.asyncio import Redis
    from redis.exceptions import ResponseError

    from paysys.core.config import get_settings

    redis = Redis.from_url(get_settings().redis_url, decode_responses=True)
    try:
        try:
            groups = {g["name"]: g for g in await redis.xinfo_groups("events")}
        except ResponseError:  # no stream yet
            return False
        group = groups.get("admin")
        return bool(group) and group["pending"] == 0 and group.get("lag") == 0
    finally:
        await redis.aclose()


async def test_catch_up_after_downtime_and_redelivery(clean_state) -> None:  # type: ignore[no-untyped-def]
    fast = {"events_claim_idle_ms": 300, "events_claim_interval_ms": 100}
    async with AsyncExitStack() as stack:
        await _start(stack, "admin", **fast)  # creates the consumer group, then goes down
        await poll(_group_settled)

    async with AsyncExitStack() as stack:
        # The admin service is down: another service produces and its relay publishes.
        await _start(stack, "payments", payments_processor="none")
        await _produce(9)  # 9 config events + 1 user.created
        await poll(lambda: _outbox_published(10))
        assert await audit_count() == 0

    async with AsyncExitStack() as stack:
        await _start(stack, "admin", **fast)
        await poll(lambda: _count_is(10))
        await poll(_group_settled)
        assert await audit_count() == 10
        rows = await fetch("SELECT action, count(*) AS n FROM audit_logs GROUP BY action")
        assert {r["action"]: r["n"] for r in rows} == {
            "SYSTEM_CONFIG_CHANGED": 9,
            "USER_REGISTERED": 1,
        }

        # Redelivery: the relay publishes every event again (at-least-once); nothing doubles.
        await fetch("UPDATE outbox SET published_at = NULL")
        await poll(lambda: _outbox_published(10))
        await poll(_group_settled)
        assert await audit_count() == 10
        dupes = await fetch("SELECT event_id FROM audit_logs GROUP BY event_id HAVING count(*) > 1")
        assert dupes == []


async def _outbox_published(expected: int) -> bool:
    rows = await fetch("SELECT count(*) AS n FROM outbox WHERE published_at IS NOT NULL")
    return int(rows[0]["n"]) >= expected


async def _count_is(expected: int) -> bool:
    return await audit_count() == expected


async def test_delivery_failing_after_the_write_is_redelivered_into_one_row(  # type: ignore[no-untyped-def]
    clean_state, monkeypatch
) -> None:
    from paysys.admin.consumer import handlers

    calls: list[uuid.UUID] = []

    async def crashes_once(session, event) -> None:  # type: ignore[no-untyped-def]
        calls.append(event.id)
        await record_audit(session, event)  # the row is written ...
        if len(calls) == 1:
            raise RuntimeError("... and the consumer dies before its commit")

    monkeypatch.setattr(handlers, "_any", [crashes_once])
    fast = {"events_claim_idle_ms": 200, "events_claim_interval_ms": 100}
    async with AsyncExitStack() as stack:
        await _start(stack, "admin", **fast)
        await _produce(1)
        await poll(lambda: _count_is(2))  # the config event and the user.created
        await poll(_group_settled)
        assert calls.count(calls[0]) == 2  # the failed one came back
        assert len(calls) == 3  # two events, one of them delivered twice
        assert await audit_count() == 2


async def test_audit_list_pages_come_from_indexes(clean_state) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.dialects import postgresql

    from paysys.admin.audit import AuditFilters, page_statement

    await fetch(
        "INSERT INTO audit_logs (id, event_id, event_type, action, actor_id, resource_type,"
        " resource_id, created_at)"
        " SELECT gen_random_uuid(), gen_random_uuid(), 'x', (ARRAY['USER_LOGIN', 'USER_UPDATED'])"
        "[1 + g % 2], gen_random_uuid(), 'user', g::text, now() - make_interval(secs => g)"
        " FROM generate_series(1, 5000) AS g"
    )
    await fetch("ANALYZE audit_logs")
    # (filters, indexes the planner may use; a common action may also be read off the
    # created_at index in order, which is just as good for one page)
    cases = [
        (AuditFilters(), ("ix_audit_logs_created_at",)),
        (
            AuditFilters(action="USER_LOGIN"),
            ("ix_audit_logs_action_created_at", "ix_audit_logs_created_at"),
        ),
        (AuditFilters(actor_id=uuid.uuid4()), ("ix_audit_logs_actor_id_created_at",)),
        (AuditFilters(resource_type="user", resource_id="42"), ("ix_audit_logs_resource",)),
    ]
    for filters, indexes in cases:
        statement = page_statement(filters, page=1, limit=10)
        sql = str(
            statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        )
        plan = "\n".join(r[0] for r in await fetch("EXPLAIN " + sql))
        assert any(index in plan for index in indexes), plan
        assert "Seq Scan on audit_logs" not in plan, plan
