"""`GET /api/admin/payments`: every user's payments with the payments list's filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.admin import admin_and_token, insert_payment, insert_user


@pytest.fixture
async def client(app_client, clean_state):  # type: ignore[no-untyped-def]
    return await app_client("admin")


async def test_admin_sees_everyones_payments_with_filters(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    a, b, c, d = [await insert_user() for _ in range(4)]
    old = datetime(2026, 1, 15, 10, tzinfo=UTC)
    p1 = await insert_payment(a["id"], b["id"], amount=1000, description="Rent January")
    p2 = await insert_payment(c["id"], d["id"], amount=500, currency="EUR", status="completed")
    p3 = await insert_payment(b["id"], a["id"], amount=1500, currency="JPY", created_at=old)
    p4 = await insert_payment(d["id"], None, amount=25000, status="failed")

    async def ids(**params: str) -> list[str]:
        r = await client.get("/api/admin/payments", headers=headers, params=params)
        assert r.status_code == 200, r.text
        return [p["id"] for p in r.json()["data"]["payments"]]

    r = await client.get("/api/admin/payments", headers=headers, params={"limit": 2})
    data = r.json()["data"]
    assert data["pagination"] == {
        "page": 1,
        "limit": 2,
        "total": 4,
        "totalPages": 2,
        "hasMore": True,
    }
    first = data["payments"][0]
    assert {"id", "amount", "currency", "status", "sender", "recipient"} <= set(first)

    assert set(await ids()) == {str(p) for p in (p1, p2, p3, p4)}
    assert await ids(status="completed") == [str(p2)]
    assert await ids(currency="jpy") == [str(p3)]
    assert await ids(q="rent") == [str(p1)]
    assert await ids(minAmount="100", currency="USD") == [str(p4)]
    assert await ids(endDate="2026-01-15") == [str(p3)]
    assert await ids(sort="amount", order="asc", currency="USD") == [str(p1), str(p4)]
    since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert set(await ids(startDate=since)) == {str(p1), str(p2), str(p4)}
    r = await client.get("/api/admin/payments", headers=headers)
    by_id = {p["id"]: p for p in r.json()["data"]["payments"]}
    assert by_id[str(p3)]["amount"] == "1500" and by_id[str(p2)]["amount"] == "5.00"
    assert by_id[str(p4)]["recipient"] is None


BAD_PAYMENT_QUERIES = [
    {"status": "lost"},
    {"limit": "0"},
    {"sort": "description"},
    {"currency": "ABC"},
    {"minAmount": "-1"},
    {"startDate": "nope"},
    {"unknown": "1"},
    {"limit": "٣"},
    {"page": "²"},
    {"status": ""},
]


async def test_bad_filters_are_400(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    for params in BAD_PAYMENT_QUERIES:
        r = await client.get("/api/admin/payments", headers=headers, params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    # the same query model as GET /api/payments: a repeated parameter is refused too
    r = await client.get("/api/admin/payments", headers=headers, params=[("page", "1")] * 2)
    assert r.status_code == 400 and r.json()["error"]["message"] == "page: must be given once"
