"""System configuration: keys, per-key validation, cross-key rules, `config.updated` events."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from paysys.core import sysconfig
from tests.support.admin import admin_and_token, db, fetch


@pytest.fixture
async def client(app_client, clean_state):  # type: ignore[no-untyped-def]
    yield await app_client("admin")
    # Limits set here would otherwise refuse later tests' payments (shared run database).
    conn = await db()
    try:
        await conn.execute("DELETE FROM system_config")
    finally:
        await conn.close()


async def config_events() -> list[dict]:  # type: ignore[type-arg]
    rows = await fetch("SELECT payload FROM outbox WHERE type = 'config.updated' ORDER BY seq")
    return [json.loads(r["payload"]) for r in rows]


async def test_get_lists_every_key_with_defaults(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    r = await client.get("/api/admin/config", headers=headers)
    assert r.status_code == 200
    entries = r.json()["data"]["config"]
    assert [e["key"] for e in entries] == sorted(sysconfig.KEYS)
    by_key = {e["key"]: e for e in entries}
    assert by_key["payment.minAmount"] == {
        "key": "payment.minAmount",
        "value": "0.01",
        "defaultValue": "0.01",
        "description": sysconfig.KEYS["payment.minAmount"].description,
        "isDefault": True,
        "updatedAt": None,
        "updatedBy": None,
    }
    assert by_key["payment.maxAmount"]["value"] == "100000000.00"
    r = await client.get("/api/admin/config/payment.maxAmount", headers=headers)
    assert r.json()["data"]["value"] == "100000000.00"
    r = await client.get("/api/admin/config/no.such.key", headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "CONFIG_KEY_NOT_FOUND"


async def test_put_one_key_stores_canonical_value_and_emits(client) -> None:  # type: ignore[no-untyped-def]
    admin, headers = await admin_and_token()
    r = await client.put(
        "/api/admin/config/payment.maxAmount", headers=headers, json={"value": "5000"}
    )
    assert r.status_code == 200, r.text
    entry = r.json()["data"]
    assert entry["value"] == "5000.00" and entry["isDefault"] is False
    assert entry["updatedBy"] == str(admin["id"]) and entry["updatedAt"].endswith("Z")
    (evt,) = await config_events()
    assert evt["actorId"] == str(admin["id"])
    assert evt["data"] == {
        "key": "payment.maxAmount",
        "oldValue": "100000000.00",
        "newValue": "5000.00",
    }
    # Same value again: nothing changes, no event.
    r = await client.put(
        "/api/admin/config/payment.maxAmount", headers=headers, json={"value": "5000.00"}
    )
    assert r.status_code == 200 and len(await config_events()) == 1
    # JSON numbers are exact (never floats).
    r = await client.put(
        "/api/admin/config/payment.minAmount",
        headers={**headers, "content-type": "application/json"},
        content=b'{"value": 10.5}',
    )
    assert r.status_code == 200 and r.json()["data"]["value"] == "10.50"

    from paysys.core.config import get_settings
    from paysys.core.db import create_engine, create_sessionmaker

    engine = create_engine(get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            assert await sysconfig.get_value(session, "payment.maxAmount") == "5000.00"
            assert await sysconfig.get_value(session, "maintenance.enabled") is False
            assert await sysconfig.get_value(session, "nope") is None
            assert await sysconfig.amount_limits(session) == {"USD": (1050, 500000)}
    finally:
        await engine.dispose()


BAD_VALUES = [
    ("payment.minAmount", b'"0"', "must be greater than 0"),
    ("payment.minAmount", b'"-1"', "must be greater than 0"),
    ("payment.minAmount", b'"1.001"', "at most 2 decimal places"),
    ("payment.minAmount", b"1e3", "exponent"),
    ("payment.minAmount", b'"abc"', "decimal"),
    ("payment.minAmount", b"true", "decimal"),
    ("payment.minAmount", b"null", "decimal"),
    ("payment.maxAmount", b'"100000000.01"', "must not exceed"),
    ("payment.defaultCurrency", b'"XYZ"', "ISO 4217"),
    ("payment.defaultCurrency", b"840", "ISO 4217"),
    ("maintenance.enabled", b'"yes"', "true or false"),
    ("maintenance.message", b"5", "string"),
]


async def test_values_are_validated_per_key(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    for key, raw, message in BAD_VALUES:
        r = await client.put(
            f"/api/admin/config/{key}",
            headers={**headers, "content-type": "application/json"},
            content=b'{"value": ' + raw + b"}",
        )
        assert r.status_code == 400, (key, raw, r.text)
        error = r.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"][0]["field"] == key
        assert message in error["message"]
        assert await config_events() == []


async def test_other_keys_accept_good_values(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    for key, value, stored in [
        ("payment.defaultCurrency", "eur", "EUR"),
        ("maintenance.enabled", True, True),
        ("maintenance.message", "  back at 5  ", "back at 5"),
    ]:
        r = await client.put(f"/api/admin/config/{key}", headers=headers, json={"value": value})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["value"] == stored


async def test_bad_bodies(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    json_headers = {**headers, "content-type": "application/json"}
    url = "/api/admin/config/payment.minAmount"
    r = await client.put(url, headers=json_headers, content=b'{"value": ')
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_JSON"
    r = await client.put(url, headers=json_headers, content=b"")
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await client.put(url, headers=headers, json={"value": "1.00", "extra": 1})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["field"] == "extra"
    r = await client.put(url, headers=headers, json={})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["field"] == "value"
    r = await client.put(url, headers=headers, json=["value"])
    assert r.status_code == 400
    r = await client.put("/api/admin/config/nope", headers=headers, json={"value": 1})
    assert r.status_code == 404 and r.json()["error"]["code"] == "CONFIG_KEY_NOT_FOUND"
    r = await client.put("/api/admin/config", headers=headers, json=[1, 2])
    assert r.status_code == 400
    r = await client.put("/api/admin/config", headers=headers, json={})
    assert r.status_code == 400
    r = await client.delete(url, headers=headers)
    assert r.status_code == 405


async def test_deeply_nested_config_body_is_invalid_json(client) -> None:  # type: ignore[no-untyped-def]
    """It was a 500: the admin reader did not catch the parser's RecursionError."""
    _, headers = await admin_and_token()
    json_headers = {**headers, "content-type": "application/json"}
    for url in ("/api/admin/config", "/api/admin/config/payment.minAmount"):
        for deep in (b"[" * 100_000, b'{"value": ' * 50_000):
            r = await client.put(url, headers=json_headers, content=deep)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "INVALID_JSON"


async def test_bulk_put_is_all_or_nothing_and_checks_min_le_max(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    r = await client.put(
        "/api/admin/config",
        headers=headers,
        json={"payment.minAmount": "5.00", "nope.key": 1, "maintenance.enabled": "yes"},
    )
    assert r.status_code == 400
    fields = [d["field"] for d in r.json()["error"]["details"]]
    assert fields == ["nope.key", "maintenance.enabled"]
    assert await config_events() == []

    r = await client.put(
        "/api/admin/config",
        headers=headers,
        json={"payment.minAmount": "500", "payment.maxAmount": "400"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["details"][0]["field"] == "payment.minAmount"

    r = await client.put(
        "/api/admin/config",
        headers=headers,
        json={"payment.maxAmount": "400", "payment.minAmount": "5"},
    )
    assert r.status_code == 200, r.text
    assert [(e["key"], e["value"]) for e in r.json()["data"]["config"]] == [
        ("payment.maxAmount", "400.00"),
        ("payment.minAmount", "5.00"),
    ]
    assert len(await config_events()) == 2
    # One key alone may not cross the other either.
    r = await client.put(
        "/api/admin/config/payment.minAmount", headers=headers, json={"value": "400.01"}
    )
    assert r.status_code == 400
    assert "payment.maxAmount" in r.json()["error"]["message"]


async def test_concurrent_updates_keep_min_le_max(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    for _ in range(3):
        await client.put(
            "/api/admin/config",
            headers=headers,
            json={"payment.minAmount": "1.00", "payment.maxAmount": "1000.00"},
        )
        results = await asyncio.gather(
            client.put(
                "/api/admin/config/payment.minAmount", headers=headers, json={"value": "600"}
            ),
            client.put(
                "/api/admin/config/payment.maxAmount", headers=headers, json={"value": "500"}
            ),
        )
        assert sorted(r.status_code for r in results) == [200, 400]
        rows = await fetch("SELECT key, value FROM system_config")
        values = {r["key"]: Decimal(json.loads(r["value"])) for r in rows}
        assert values["payment.minAmount"] <= values["payment.maxAmount"]


# --- per-currency payment limits (api-contracts §10) ------------------------------------------


async def test_per_currency_limits_are_accepted_listed_and_unset(client) -> None:  # type: ignore[no-untyped-def]
    admin, headers = await admin_and_token()
    r = await client.put(
        "/api/admin/config",
        headers={**headers, "content-type": "application/json"},
        content=b'{"payment.maxAmount.KWD": 1000, "payment.minAmount.JPY": "100",'
        b' "payment.maxAmount.EUR": 12.5}',
    )
    assert r.status_code == 200, r.text
    entries = {e["key"]: e for e in r.json()["data"]["config"]}
    assert {k: e["value"] for k, e in entries.items()} == {
        "payment.maxAmount.KWD": "1000.000",  # the currency's minor-unit digits
        "payment.minAmount.JPY": "100",
        "payment.maxAmount.EUR": "12.50",
    }
    kwd = entries["payment.maxAmount.KWD"]
    assert kwd["defaultValue"] is None and kwd["isDefault"] is False
    assert kwd["updatedBy"] == str(admin["id"]) and "KWD" in kwd["description"]
    # The list shows the fixed keys and the per-currency keys that are set, sorted.
    r = await client.get("/api/admin/config", headers=headers)
    keys = [e["key"] for e in r.json()["data"]["config"]]
    assert keys == sorted([*sysconfig.KEYS, *entries])
    # Any supported currency's key can be read, set or not.
    r = await client.get("/api/admin/config/payment.minAmount.GBP", headers=headers)
    assert r.status_code == 200
    assert r.json()["data"] | {"description": ""} == {
        "key": "payment.minAmount.GBP",
        "value": None,
        "defaultValue": None,
        "description": "",
        "isDefault": True,
        "updatedAt": None,
        "updatedBy": None,
    }
    # null unsets a per-currency key (back to no limit of its own), with its event.
    r = await client.put(
        "/api/admin/config/payment.maxAmount.KWD", headers=headers, json={"value": None}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["value"] is None and r.json()["data"]["isDefault"] is True
    assert await fetch("SELECT key FROM system_config WHERE key = 'payment.maxAmount.KWD'") == []
    r = await client.put(  # unsetting what is not set changes nothing
        "/api/admin/config/payment.maxAmount.KWD", headers=headers, json={"value": None}
    )
    assert r.status_code == 200
    events = [e["data"] for e in await config_events()]
    assert events[-1] == {
        "key": "payment.maxAmount.KWD",
        "oldValue": "1000.000",
        "newValue": None,
    }
    assert len(events) == 4


BAD_CURRENCY_LIMITS = [
    ({"payment.maxAmount.XYZ": "10"}, "payment.maxAmount.XYZ", "ISO 4217"),
    ({"payment.maxAmount.kwd": "10"}, "payment.maxAmount.kwd", "upper case"),
    ({"payment.maxAmount.KWD": "10.0001"}, "payment.maxAmount.KWD", "3 decimal places"),
    ({"payment.minAmount.JPY": "10.5"}, "payment.minAmount.JPY", "whole number"),
    ({"payment.maxAmount.KWD": "0"}, "payment.maxAmount.KWD", "greater than 0"),
    ({"payment.maxAmount.KWD": "1e3"}, "payment.maxAmount.KWD", "exponent"),
    ({"payment.maxAmount.KWD": "100000000.001"}, "payment.maxAmount.KWD", "must not exceed"),
    (
        {"payment.minAmount.KWD": "10.000", "payment.maxAmount.KWD": "9.999"},
        "payment.minAmount.KWD",
        "must not be greater than payment.maxAmount.KWD",
    ),
    (
        {"payment.minAmount.USD": "1000.01"},  # above the unsuffixed (USD) max of 1000.00
        "payment.minAmount.USD",
        "must not be greater than payment.maxAmount",
    ),
]


async def test_bad_per_currency_limits_are_400(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    r = await client.put(
        "/api/admin/config/payment.maxAmount", headers=headers, json={"value": "1000"}
    )
    assert r.status_code == 200
    before = len(await config_events())
    for changes, field, message in BAD_CURRENCY_LIMITS:
        r = await client.put("/api/admin/config", headers=headers, json=changes)
        assert r.status_code == 400, (changes, r.text)
        error = r.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"][0]["field"] == field
        assert message in error["message"], (changes, error["message"])
    # The one-key route: unknown keys are 404 there, bad values 400.
    r = await client.put(
        "/api/admin/config/payment.maxAmount.XYZ", headers=headers, json={"value": "1"}
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "CONFIG_KEY_NOT_FOUND"
    r = await client.put(
        "/api/admin/config/payment.maxAmount.JPY", headers=headers, json={"value": "1.5"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    # A per-currency max below the min of the same currency, set one key at a time.
    r = await client.put(
        "/api/admin/config/payment.minAmount.KWD", headers=headers, json={"value": "5"}
    )
    assert r.status_code == 200
    r = await client.put(
        "/api/admin/config/payment.maxAmount.KWD", headers=headers, json={"value": "4.999"}
    )
    assert r.status_code == 400 and "payment.minAmount.KWD" in r.json()["error"]["message"]
    assert len(await config_events()) == before + 1  # only the good KWD minimum
    rows = await fetch("SELECT key FROM system_config ORDER BY key")
    assert [row["key"] for row in rows] == ["payment.maxAmount", "payment.minAmount.KWD"]
