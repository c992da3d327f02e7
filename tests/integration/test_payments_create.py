"""POST /api/payments: validation of every rule, recipients, limits, events in one transaction."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support.payments import body, count, events_of, make_user, pg


async def _client(app_client):
    return await app_client("payments")


async def test_create_returns_the_payment_with_history_and_event(app_client) -> None:
    client = await _client(app_client)
    alice, bob = await make_user(), await make_user("VENDOR")
    r = await client.post(
        "/api/payments",
        json=body(bob, amount="12.5", metadata={"order": "A1", "n": 3, "gift": True, "x": 1.25}),
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    p = r.json()["data"]
    assert p["amount"] == "12.50" and p["currency"] == "USD" and p["status"] == "pending"
    assert p["senderId"] == str(alice.id) and p["recipientId"] == str(bob.id)
    assert p["sender"] == {"id": str(alice.id), "email": alice.email, "name": alice.name}
    assert p["recipient"]["email"] == bob.email
    assert p["metadata"] == {"order": "A1", "n": 3, "gift": True, "x": 1.25}
    assert p["createdAt"].endswith("Z") and p["completedAt"] is None
    assert "Idempotent-Replayed" not in r.headers
    detail = (await client.get(f"/api/payments/{p['id']}", headers=alice.headers)).json()["data"]
    assert [t["status"] for t in detail["transactions"]] == ["pending"]
    assert {k: v for k, v in detail.items() if k != "transactions"} == p
    events = await events_of(p["id"])
    assert [e["type"] for e in events] == ["payment.created"]
    assert events[0]["data"]["payment"] == p and events[0]["actorId"] == str(alice.id)
    async with pg() as conn:
        row = await conn.fetchrow(
            "SELECT amount, currency FROM payments WHERE id = $1", uuid.UUID(p["id"])
        )
    assert row["amount"] == 1250 and row["currency"] == "USD"


@pytest.mark.parametrize(
    ("amount", "currency", "stored", "shown"),
    [
        ("100.00", "USD", 10000, "100.00"),
        (100, "usd", 10000, "100.00"),
        ("0.01", "EUR", 1, "0.01"),
        ("1500", "JPY", 1500, "1500"),
        (1500, "JPY", 1500, "1500"),
        ("1.234", "KWD", 1234, "1.234"),
        ("100000000.00", "USD", 10_000_000_000, "100000000.00"),
        ("  7.1 ", "GBP", 710, "7.10"),
    ],
)
async def test_amounts_accepted(app_client, amount, currency, stored, shown) -> None:
    client = await _client(app_client)
    alice, bob = await make_user(), await make_user()
    r = await client.post(
        "/api/payments", json=body(bob, amount=amount, currency=currency), headers=alice.headers
    )
    assert r.status_code == 201, r.text
    assert r.json()["data"]["amount"] == shown
    assert r.json()["data"]["currency"] == currency.upper()
    assert await count("SELECT amount FROM payments WHERE sender_id = $1", alice.id) == stored


RAW_AMOUNT_CASES = [
    ('"0"', "USD", "must be greater than 0"),
    ("0", "USD", "must be greater than 0"),
    ("0.00", "USD", "must be greater than 0"),
    ('"-5.00"', "USD", "must be greater than 0"),
    ("-5", "USD", "must be greater than 0"),
    ('"1.001"', "USD", "at most 2 decimal places"),
    ("1.001", "USD", "at most 2 decimal places"),
    ('"100.5"', "JPY", "whole number"),
    ("100.5", "JPY", "whole number"),
    ('"1.0001"', "KWD", "at most 3 decimal places"),
    ("1e3", "USD", "exponent"),
    ("1E3", "USD", "exponent"),
    ('"1e3"', "USD", "exponent"),
    ("NaN", "USD", "finite"),
    ('"NaN"', "USD", "finite"),
    ("Infinity", "USD", "finite"),
    ('"abc"', "USD", "decimal number"),
    ('""', "USD", "decimal number"),
    ('"1,000.00"', "USD", "decimal number"),
    ("true", "USD", "decimal number"),
    ("null", "USD", "decimal number"),
    ("[1]", "USD", "decimal number"),
    ('"100000000.01"', "USD", "must not exceed 100000000.00"),
    ("100000001", "JPY", "must not exceed 100000000"),
    ('"' + "9" * 30 + '"', "USD", "must not exceed"),
    ('"' + "9" * 100 + '"', "USD", "must not exceed"),
]


@pytest.mark.parametrize(("raw", "currency", "message"), RAW_AMOUNT_CASES)
async def test_amounts_refused(app_client, raw, currency, message) -> None:
    client = await _client(app_client)
    alice, bob = await make_user(), await make_user()
    content = (
        '{"amount": ' + raw + ', "currency": "' + currency + '", "type": "instant", '
        '"description": "x", "recipientId": "' + str(bob.id) + '"}'
    )
    r = await client.post(
        "/api/payments",
        content=content,
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"].startswith("amount: ") and message in error["message"]
    assert error["details"][0]["field"] == "amount"
    assert await count("SELECT count(*) FROM payments WHERE sender_id = $1", alice.id) == 0


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "US"}, "currency"),
        ({"currency": 840}, "currency"),
        ({"type": "weekly"}, "type"),
        ({"type": None, "_drop": "type"}, "type"),
        ({"description": ""}, "description"),
        ({"description": "   "}, "description"),
        ({"description": "x" * 501}, "description"),
        ({"description": 5}, "description"),
        ({"metadata": {"k": {"nested": 1}}}, "metadata"),
        ({"metadata": {f"k{i}": i for i in range(21)}}, "metadata"),
        ({"metadata": {"k" * 41: 1}}, "metadata"),
        ({"metadata": {"k": "v" * 501}}, "metadata"),
        ({"metadata": {"password": "x"}}, "metadata"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"unknownField": 1}, "unknownField"),
        ({"recipientId": "not-a-uuid"}, "recipientId"),
        ({"recipientEmail": "no-at-sign"}, "recipientEmail"),
    ],
)
async def test_fields_refused(app_client, patch, field) -> None:
    client = await _client(app_client)
    alice, bob = await make_user(), await make_user()
    data = body(bob)
    drop = patch.pop("_drop", None)
    data.update(patch)
    if drop:
        data.pop(drop)
    if "recipientEmail" in patch:
        data.pop("recipientId")
    r = await client.post("/api/payments", json=data, headers=alice.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert r.json()["error"]["details"][0]["field"] == field


async def test_recipient_rules(app_client) -> None:
    client = await _client(app_client)
    alice, bob = await make_user(), await make_user()
    inactive = await make_user(active=False)
    both = body(bob, recipientEmail=bob.email)
    r = await client.post("/api/payments", json=both, headers=alice.headers)
    assert r.status_code == 400 and "exactly one" in r.json()["error"]["message"]
    neither = body()
    r = await client.post("/api/payments", json=neither, headers=alice.headers)
    assert r.status_code == 400
    r = await client.post("/api/payments", json=body(alice), headers=alice.headers)
    assert (
        r.status_code == 400 and r.json()["error"]["message"] == "recipientId: must not be yourself"
    )
    r = await client.post(
        "/api/payments", json=body(recipientEmail=alice.email.upper()), headers=alice.headers
    )
    assert r.status_code == 400 and "yourself" in r.json()["error"]["message"]
    r = await client.post("/api/payments", json=body(inactive), headers=alice.headers)
    assert r.status_code == 400 and "deactivated" in r.json()["error"]["message"]
    r = await client.post(
        "/api/payments", json=body(recipientId=str(uuid.uuid4())), headers=alice.headers
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "RECIPIENT_NOT_FOUND"
    r = await client.post(
        "/api/payments", json=body(recipientEmail="nobody@example.com"), headers=alice.headers
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "RECIPIENT_NOT_FOUND"
    r = await client.post(
        "/api/payments", json=body(recipientEmail=f"  {bob.email.upper()} "), headers=alice.headers
    )
    assert r.status_code == 201 and r.json()["data"]["recipientId"] == str(bob.id)
    assert await count("SELECT count(*) FROM payments WHERE sender_id = $1", alice.id) == 1


async def test_bad_json_auth_and_empty_body(app_client) -> None:
    client = await _client(app_client)
    alice = await make_user()
    r = await client.post(
        "/api/payments",
        content=b"{nope",
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_JSON"
    r = await client.post("/api/payments", content=b"", headers=alice.headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await client.post("/api/payments", json=[1], headers=alice.headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await client.post("/api/payments", json=body())
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"


async def test_config_limits_are_enforced_and_reloaded(app_client) -> None:
    client = await _client(app_client)
    alice, bob = await make_user(), await make_user()
    async with pg() as conn:
        await conn.execute("DELETE FROM system_config WHERE key LIKE 'payment.%'")
        await conn.execute(
            "INSERT INTO system_config (key, value) VALUES ('payment.minAmount', '\"5.00\"'), "
            "('payment.maxAmount', '\"1000.00\"')"
        )
    limits = client.app.state.payment_limits
    limits.invalidate()
    r = await client.post("/api/payments", json=body(bob, amount="4.99"), headers=alice.headers)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "amount: must be at least 5.00 USD"
    r = await client.post("/api/payments", json=body(bob, amount="1000.01"), headers=alice.headers)
    assert r.status_code == 400 and "must not exceed 1000.00 USD" in r.json()["error"]["message"]
    # The unsuffixed keys are USD's only (§10): 1001 JPY and 4 JPY pass.
    for amount in ("1001", "4"):
        r = await client.post(
            "/api/payments", json=body(bob, amount=amount, currency="JPY"), headers=alice.headers
        )
        assert r.status_code == 201, r.text
    r = await client.post("/api/payments", json=body(bob, amount="5"), headers=alice.headers)
    assert r.status_code == 201
    # config.updated for a limit key drops the cache at once (consumer handler).
    async with pg() as conn:
        await conn.execute(
            "UPDATE system_config SET value = '\"1.00\"' WHERE key = 'payment.minAmount'"
        )
    from paysys.core.events.envelope import EventEnvelope

    event = EventEnvelope(
        type="config.updated",
        source="admin-service",
        data={"key": "payment.minAmount", "oldValue": "5.00", "newValue": "1.00"},
    )
    await limits.on_config_updated(None, event)  # type: ignore[arg-type]
    r = await client.post("/api/payments", json=body(bob, amount="2"), headers=alice.headers)
    assert r.status_code == 201, r.text
    payloads = [json.loads(r.content)]
    assert payloads[0]["data"]["amount"] == "2.00"
    async with pg() as conn:
        await conn.execute("DELETE FROM system_config WHERE key LIKE 'payment.%'")
    limits.invalidate()


async def test_limits_per_currency(app_client) -> None:
    """§10: `payment.maxAmount.KWD` bounds KWD payments (in fils), the USD limit does not; a
    change of a per-currency key reloads the cache through its `config.updated` event."""
    from paysys.core.events.envelope import EventEnvelope

    client = await _client(app_client)
    alice, bob = await make_user(), await make_user()
    async with pg() as conn:
        await conn.execute("DELETE FROM system_config WHERE key LIKE 'payment.%'")
        await conn.execute(
            "INSERT INTO system_config (key, value) VALUES ('payment.maxAmount', '\"1000.00\"'), "
            "('payment.maxAmount.KWD', '\"2000.000\"'), ('payment.minAmount.JPY', '\"100\"')"
        )
    limits = client.app.state.payment_limits
    limits.invalidate()

    async def pay(amount: str, currency: str):  # type: ignore[no-untyped-def]
        return await client.post(
            "/api/payments", json=body(bob, amount=amount, currency=currency), headers=alice.headers
        )

    try:
        r = await pay("2000.001", "KWD")  # one fils over
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["message"] == "amount: must not exceed 2000.000 KWD"
        assert error["details"] == [{"field": "amount", "message": "must not exceed 2000.000 KWD"}]
        assert (await pay("1500.000", "KWD")).status_code == 201  # the USD max is not KWD's
        assert (await pay("2000", "KWD")).status_code == 201
        assert (await pay("1000.01", "USD")).status_code == 400
        r = await pay("99", "JPY")
        assert r.json()["error"]["message"] == "amount: must be at least 100 JPY"
        assert (await pay("5000", "JPY")).status_code == 201  # no JPY max: USD's is not it
        assert (await pay("99999999.99", "EUR")).status_code == 201  # EUR: no config limit

        # Lower the KWD max; the event of that key drops the cache at once.
        async with pg() as conn:
            await conn.execute(
                "UPDATE system_config SET value = '\"1000.000\"' "
                "WHERE key = 'payment.maxAmount.KWD'"
            )
        assert (await pay("1500.000", "KWD")).status_code == 201  # cached (TTL 5 s)
        event = EventEnvelope(
            type="config.updated",
            source="admin-service",
            data={"key": "payment.maxAmount.KWD", "oldValue": "2000.000", "newValue": "1000.000"},
        )
        await limits.on_config_updated(None, event)  # type: ignore[arg-type]
        r = await pay("1500.000", "KWD")
        assert r.status_code == 400 and "1000.000 KWD" in r.json()["error"]["message"]
        # Other keys' events keep the cache.
        other = EventEnvelope(
            type="config.updated",
            source="admin-service",
            data={"key": "maintenance.enabled", "oldValue": False, "newValue": True},
        )
        async with pg() as conn:
            await conn.execute("DELETE FROM system_config WHERE key = 'payment.maxAmount.KWD'")
        await limits.on_config_updated(None, other)  # type: ignore[arg-type]
        assert (await pay("1500.000", "KWD")).status_code == 400
        limits.invalidate()
        assert (await pay("1500.000", "KWD")).status_code == 201
    finally:
        async with pg() as conn:
            await conn.execute("DELETE FROM system_config WHERE key LIKE 'payment.%'")
        limits.invalidate()


async def test_limits_unreadable_keep_last_known(app_client) -> None:
    """A stored limit edited by hand past the rules: the last known limits stay in force, or,
    with none known, the defaults."""
    from paysys.payments.limits import AmountLimits

    client = await _client(app_client)
    alice, bob = await make_user(), await make_user()
    limits = client.app.state.payment_limits = AmountLimits(ttl=0)  # reload on every create
    async with pg() as conn:
        await conn.execute("DELETE FROM system_config WHERE key LIKE 'payment.%'")
        await conn.execute(
            "INSERT INTO system_config (key, value) VALUES ('payment.maxAmount.KWD', '\"5.000\"')"
        )

    async def status() -> int:
        kwd = body(bob, amount="6", currency="KWD")
        return (await client.post("/api/payments", json=kwd, headers=alice.headers)).status_code

    try:
        assert await status() == 400
        async with pg() as conn:
            await conn.execute(
                "UPDATE system_config SET value = '\"5.0001\"' WHERE key = 'payment.maxAmount.KWD'"
            )
        assert await status() == 400  # unreadable now: the last known KWD max still holds
        limits.invalidate()
        assert await status() == 201  # nothing known: the defaults (no KWD limit)
    finally:
        async with pg() as conn:
            await conn.execute("DELETE FROM system_config WHERE key LIKE 'payment.%'")
