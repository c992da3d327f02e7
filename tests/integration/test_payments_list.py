"""List (filters, sorts, pagination, aliases, 400s), recipients, reports per currency."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.payments import body, make_user, pg, set_status


async def _seed(client):
    alice, bob, carol = await make_user("CUSTOMER"), await make_user("VENDOR"), await make_user()
    specs = [
        ("10.00", "USD", "instant", "Coffee beans"),
        ("250.50", "USD", "scheduled", "Rent share"),
        ("5000", "JPY", "instant", "Ramen FAIL test"),
        ("99.99", "EUR", "recurring", "Gym membership"),
        ("1.234", "KWD", "instant", "Tea 50%_off"),
    ]
    ids = []
    for amount, currency, kind, text in specs:
        r = await client.post(
            "/api/payments",
            json=body(bob, amount=amount, currency=currency, type=kind, description=text),
            headers=alice.headers,
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["data"]["id"])
    # One payment between others: alice must never see it.
    r = await client.post("/api/payments", json=body(carol), headers=bob.headers)
    other = r.json()["data"]["id"]
    await set_status(ids[0], "completed")
    await set_status(ids[3], "failed")
    return alice, bob, carol, ids, other


async def test_list_filters_sorts_and_pagination(app_client) -> None:
    client = await app_client("payments")
    alice, bob, _carol, ids, other = await _seed(client)

    async def names(query: str, user=alice) -> list[str]:
        r = await client.get(f"/api/payments?{query}", headers=user.headers)
        assert r.status_code == 200, r.text
        return [p["description"] for p in r.json()["data"]["payments"]]

    r = await client.get("/api/payments", headers=alice.headers)
    data = r.json()["data"]
    assert data["pagination"] == {
        "page": 1,
        "limit": 10,
        "total": 5,
        "totalPages": 1,
        "hasMore": False,
    }
    assert other not in [p["id"] for p in data["payments"]]
    assert [p["id"] for p in data["payments"]] == list(reversed(ids))  # newest first
    assert await names("sort=createdAt&order=asc") == [
        "Coffee beans",
        "Rent share",
        "Ramen FAIL test",
        "Gym membership",
        "Tea 50%_off",
    ]
    assert await names("status=completed") == ["Coffee beans"]
    assert await names("type=instant&order=asc") == [
        "Coffee beans",
        "Ramen FAIL test",
        "Tea 50%_off",
    ]
    assert await names("currency=usd&sort=amount&order=desc") == ["Rent share", "Coffee beans"]
    assert await names("currency=USD&minAmount=10&maxAmount=10.00") == ["Coffee beans"]
    # Without a currency, bounds compare face values: 5000 JPY > 100, 1.234 KWD < 10.
    assert await names("minAmount=100&order=asc") == ["Rent share", "Ramen FAIL test"]
    assert await names("maxAmount=10&order=asc") == ["Coffee beans", "Tea 50%_off"]
    assert await names("q=RENT") == ["Rent share"]
    assert await names("q=50%25_") == ["Tea 50%_off"]  # % and _ are literal
    assert await names("q=%25") == ["Tea 50%_off"]
    today = datetime.now(UTC).date()
    assert len(await names(f"startDate={today}&endDate={today}")) == 5
    assert len(await names(f"fromDate={today}&toDate={today}")) == 5
    assert await names(f"endDate={today - timedelta(days=1)}") == []
    assert len(await names(f"startDate={today}T00:00:00Z")) == 5
    page = await client.get(
        "/api/payments?limit=2&page=2&sort=amount&order=asc", headers=alice.headers
    )
    assert page.json()["data"]["pagination"] == {
        "page": 2,
        "limit": 2,
        "total": 5,
        "totalPages": 3,
        "hasMore": True,
    }
    beyond = await client.get("/api/payments?page=9", headers=alice.headers)
    assert (
        beyond.json()["data"]["payments"] == []
        and beyond.json()["data"]["pagination"]["total"] == 5
    )
    # bob (recipient of five, sender of one) sees six; an admin sees everything.
    assert len(await names("limit=100", bob)) == 6
    admin = await make_user("ADMIN")
    assert len(await names("limit=100", admin)) >= 6


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "page=abc",
        "limit=0",
        "limit=101",
        "limit=1.5",
        "sort=name",
        "order=up",
        "status=done",
        "type=weekly",
        "currency=XYZ",
        "startDate=yesterday",
        "endDate=2026-13-01",
        "startDate=2026-02-01&endDate=2026-01-01",
        "minAmount=0",
        "minAmount=-1",
        "minAmount=1e3",
        "currency=JPY&minAmount=1.5",
        "maxAmount=abc",
        "minAmount=10&maxAmount=5",
        "currency=USD&minAmount=10&maxAmount=5",
        "unknown=1",
        "page=1&page=2",
        "startDate=2026-01-01&fromDate=2026-01-01",
        "q=" + "x" * 201,
        "maxAmount=100000000.0001",
        "startDate=0001-01-01",
        # non-ASCII digits (issue 15: `page=²` answered 500, `limit=٣` was taken as 3)
        "page=²",
        "limit=٣",
        "page=\uff11",
        "minAmount=\u0661\u0660",
        "startDate=٢٠٢٦-01-01",
        # an empty value is a value: refused where the documented schema refuses it
        "page=",
        "status=",
        "currency=",
        "minAmount=",
        "endDate=",
    ],
)
async def test_bad_queries_are_400(app_client, query) -> None:
    client = await app_client("payments")
    alice = await make_user()
    r = await client.get(f"/api/payments?{query}", headers=alice.headers)
    assert r.status_code == 400, (query, r.text)
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_recipients_lookup(app_client) -> None:
    client = await app_client("payments")
    me = await make_user(name="Zed Me")
    tag = me.id.hex[:6]
    await make_user(name=f"Bravo {tag}")
    await make_user(name=f"Alpha {tag}")
    await make_user(name=f"Charlie {tag}", active=False)
    r = await client.get(f"/api/payments/recipients?q={tag}", headers=me.headers)
    assert r.status_code == 200
    data = r.json()["data"]
    assert isinstance(data, list)
    assert [u["name"] for u in data] == [f"Alpha {tag}", f"Bravo {tag}"]
    assert set(data[0]) == {"id", "name", "email"}
    r = await client.get("/api/payments/recipients?limit=1", headers=me.headers)
    assert len(r.json()["data"]) == 1
    r = await client.get("/api/payments/recipients", headers=me.headers)
    assert str(me.id) not in [u["id"] for u in r.json()["data"]] and len(r.json()["data"]) <= 100
    for bad in ("limit=101", "limit=0", "foo=1", "limit=٣", "limit=²", "limit=", "q=" + "x" * 101):
        assert (
            await client.get(f"/api/payments/recipients?{bad}", headers=me.headers)
        ).status_code == 400


async def test_recipients_list_only_active_customers_and_vendors(app_client) -> None:
    """§4: admins are never listed (any self-registered user may call the lookup), nor inactive
    accounts, nor the caller; customers and vendors are, whoever asks (admins included)."""
    client = await app_client("payments")
    tag = uuid.uuid4().hex[:8]
    caller = await make_user("CUSTOMER", name=f"Caller {tag}")
    customer = await make_user("CUSTOMER", name=f"Cust {tag}")
    vendor = await make_user("VENDOR", name=f"Vend {tag}")
    admin = await make_user("ADMIN", name=f"Adm {tag}")
    await make_user("VENDOR", name=f"Gone {tag}", active=False)
    await make_user("ADMIN", name=f"Old admin {tag}", active=False)

    async def listed(user, query: str = f"q={tag}") -> list[str]:
        r = await client.get(f"/api/payments/recipients?{query}", headers=user.headers)
        assert r.status_code == 200, r.text
        return [item["email"] for item in r.json()["data"]]

    assert await listed(caller) == [customer.email, vendor.email]
    assert await listed(vendor) == [caller.email, customer.email]
    assert await listed(admin) == [caller.email, customer.email, vendor.email]
    # Searching for the admin by its email finds nothing; neither does the full list.
    assert await listed(caller, f"q={admin.email}") == []
    everyone = await listed(caller, "limit=100")
    assert admin.email not in everyone and caller.email not in everyone
    async with pg() as conn:
        roles = await conn.fetch(
            "SELECT role, is_active FROM users WHERE email = ANY($1::text[])", everyone
        )
    assert {row["role"] for row in roles} <= {"CUSTOMER", "VENDOR"}
    assert all(row["is_active"] for row in roles)


async def test_reports_per_currency(app_client) -> None:
    client = await app_client("payments")
    alice, bob, *_ = await _seed(client)
    r = await client.get("/api/payments/reports", headers=alice.headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    r = await client.get("/api/payments/reports", headers=bob.headers)
    assert r.status_code == 200, r.text
    rep = r.json()["data"]
    assert rep["totalPayments"] == 6
    assert rep["byStatus"] == {
        "pending": 4,
        "processing": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
    }
    assert rep["byType"] == {"instant": 4, "scheduled": 1, "recurring": 1}
    assert rep["byCurrency"] == {
        "EUR": {"count": 1, "totalAmount": "99.99", "completedAmount": "0.00"},
        "JPY": {"count": 1, "totalAmount": "5000", "completedAmount": "0"},
        "KWD": {"count": 1, "totalAmount": "1.234", "completedAmount": "0.000"},
        "USD": {"count": 3, "totalAmount": "360.50", "completedAmount": "10.00"},
    }
    start = datetime.fromisoformat(rep["period"]["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(rep["period"]["end"].replace("Z", "+00:00"))
    assert timedelta(days=29, hours=23) < end - start <= timedelta(days=30)
    r = await client.get("/api/payments/reports?currency=jpy", headers=bob.headers)
    assert list(r.json()["data"]["byCurrency"]) == ["JPY"]
    today = datetime.now(UTC).date()
    r = await client.get(
        f"/api/payments/reports?startDate={today}&endDate={today}", headers=bob.headers
    )
    assert r.json()["data"]["period"]["end"].endswith("T23:59:59.999Z")
    assert r.json()["data"]["totalPayments"] == 6
    r = await client.get(
        f"/api/payments/reports?endDate={today - timedelta(days=1)}", headers=bob.headers
    )
    assert r.json()["data"]["totalPayments"] == 0
    assert set(r.json()["data"]["byStatus"]) == {
        "pending",
        "processing",
        "completed",
        "failed",
        "cancelled",
    }
    for bad in (
        "currency=XXX",
        "currency=",
        "startDate=nope",
        "startDate=٢٠٢٦-01-01",
        "currency=USD&currency=EUR",
        "foo=1",
        f"startDate={today}&endDate={today - timedelta(days=2)}",
    ):
        assert (
            await client.get(f"/api/payments/reports?{bad}", headers=bob.headers)
        ).status_code == 400
    async with pg() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM payments WHERE sender_id = $1", alice.id) == 5
        )


async def test_hot_queries_use_indexes(app_client) -> None:
    """EXPLAIN of the visibility list, the status filter and the processor queue: index scans
    (sequential scans disabled so the tiny test tables cannot hide a missing index)."""
    from paysys.payments.queries import PAYMENT_FROM, list_where
    from paysys.payments.schemas import ListQuery

    client = await app_client("payments")
    alice = await make_user()
    plans = {}
    async with pg() as conn:
        await conn.execute("SET enable_seqscan = off")
        where, args = list_where(ListQuery(), alice.id)
        plans["visibility"] = await conn.fetch(
            f"EXPLAIN SELECT p.id {PAYMENT_FROM}{where} ORDER BY p.created_at DESC LIMIT 10",
            *args,
        )
        where, args = list_where(ListQuery(status="pending", q="rent"), None)
        plans["status+q"] = await conn.fetch(f"EXPLAIN SELECT p.id {PAYMENT_FROM}{where}", *args)
        plans["queue"] = await conn.fetch(
            "EXPLAIN SELECT id FROM payments WHERE status = 'pending' "
            "AND created_at <= now() ORDER BY created_at LIMIT 50"
        )
    assert client is not None
    for name, rows in plans.items():
        text = "\n".join(r[0] for r in rows)
        assert "Seq Scan on payments" not in text, (name, text)
        assert "ix_payments" in text, (name, text)


async def test_openapi_documents_the_routes(app_client) -> None:
    client = await app_client("payments")
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in (
        "/api/payments",
        "/api/payments/recipients",
        "/api/payments/reports",
        "/api/payments/webhooks/psp",
        "/api/payments/{payment_id}",
        "/api/payments/{payment_id}/status",
        "/api/payments/{payment_id}/cancel",
    ):
        assert path in paths, path
    create = paths["/api/payments"]["post"]["requestBody"]["content"]["application/json"]
    assert {"amount", "type", "description"} <= set(create["schema"]["properties"])
