"""Idempotency-Key: replay, different body, in flight, 50 concurrent identical requests."""

from __future__ import annotations

import asyncio
import uuid

from tests.support.payments import body, count, make_user, pg


async def test_replay_returns_same_status_and_body(app_client) -> None:
    client = await app_client("payments")
    alice, bob = await make_user(), await make_user()
    headers = {**alice.headers, "Idempotency-Key": "order-1"}
    first = await client.post("/api/payments", json=body(bob), headers=headers)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    # Same body with other key order / whitespace: still the same request.
    again = await client.post(
        "/api/payments",
        content=b'{"recipientId": "%s", "description": "Invoice 42", "type": "instant",'
        b' "currency": "USD",  "amount": "100.00"}' % str(bob.id).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert await count("SELECT count(*) FROM payments WHERE sender_id = $1", alice.id) == 1
    async with pg() as conn:
        row = await conn.fetchrow(
            "SELECT state, response_status, expires_at - created_at AS ttl FROM idempotency_keys "
            "WHERE caller_id = $1",
            alice.id,
        )
    assert row["state"] == "completed" and row["response_status"] == 201
    assert row["ttl"].total_seconds() >= 24 * 3600 - 5


async def test_different_body_is_422_and_key_is_per_caller(app_client) -> None:
    client = await app_client("payments")
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    await client.post(
        "/api/payments", json=body(bob), headers={**alice.headers, "Idempotency-Key": "k"}
    )
    r = await client.post(
        "/api/payments",
        json=body(bob, amount="100.01"),
        headers={**alice.headers, "Idempotency-Key": "k"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    # "100" and "100.00" are spelled differently: a different request.
    r = await client.post(
        "/api/payments",
        json=body(bob, amount="100"),
        headers={**alice.headers, "Idempotency-Key": "k"},
    )
    assert r.status_code == 422
    # The same key from another caller is another key.
    r = await client.post(
        "/api/payments", json=body(bob), headers={**carol.headers, "Idempotency-Key": "k"}
    )
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers


async def test_bad_keys_and_failed_first_attempt(app_client) -> None:
    client = await app_client("payments")
    alice, bob = await make_user(), await make_user()
    r = await client.post(
        "/api/payments", json=body(bob), headers={**alice.headers, "Idempotency-Key": "x" * 256}
    )
    assert r.status_code == 400 and r.json()["error"]["details"][0]["field"] == "Idempotency-Key"
    r = await client.post(
        "/api/payments", json=body(bob), headers={**alice.headers, "Idempotency-Key": " "}
    )
    assert r.status_code == 400
    # A refused request does not consume its key: the corrected retry... is a new body (422
    # would hide the fix), so only a successful create is remembered.
    missing = body(recipientId=str(uuid.uuid4()))
    headers = {**alice.headers, "Idempotency-Key": "retry-me"}
    r = await client.post("/api/payments", json=missing, headers=headers)
    assert r.status_code == 404
    r = await client.post("/api/payments", json=body(bob), headers=headers)
    assert r.status_code == 201


async def test_expired_key_is_reusable(app_client) -> None:
    client = await app_client("payments")
    alice, bob = await make_user(), await make_user()
    headers = {**alice.headers, "Idempotency-Key": "old"}
    await client.post("/api/payments", json=body(bob), headers=headers)
    async with pg() as conn:
        await conn.execute(
            "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' "
            "WHERE caller_id = $1",
            alice.id,
        )
    r = await client.post("/api/payments", json=body(bob, amount="5.00"), headers=headers)
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    assert await count("SELECT count(*) FROM payments WHERE sender_id = $1", alice.id) == 2


async def test_in_progress_is_409(app_client) -> None:
    """A transaction holding the key (the first request, still running) → 409 after the
    bounded wait; once it is gone the key works."""
    client = await app_client("payments", idempotency_wait_ms=300)
    alice, bob = await make_user(), await make_user()
    async with pg() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "INSERT INTO idempotency_keys (caller_id, key, fingerprint, expires_at) "
            "VALUES ($1, 'busy', 'f', now() + interval '1 day')",
            alice.id,
        )
        r = await client.post(
            "/api/payments", json=body(bob), headers={**alice.headers, "Idempotency-Key": "busy"}
        )
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
        await tx.rollback()
    r = await client.post(
        "/api/payments", json=body(bob), headers={**alice.headers, "Idempotency-Key": "busy"}
    )
    assert r.status_code == 201


async def test_fifty_concurrent_identical_creates_make_one_payment(app_client) -> None:
    client = await app_client("payments")
    alice, bob = await make_user(), await make_user()
    headers = {**alice.headers, "Idempotency-Key": f"race-{uuid.uuid4()}"}
    responses = await asyncio.gather(
        *(client.post("/api/payments", json=body(bob), headers=headers) for _ in range(50))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert sum(1 for r in responses if "Idempotent-Replayed" not in r.headers) == 1
    assert await count("SELECT count(*) FROM payments WHERE sender_id = $1", alice.id) == 1
    assert (
        await count(
            "SELECT count(*) FROM outbox WHERE type = 'payment.created' "
            "AND payload->'data'->'payment'->>'senderId' = $1",
            str(alice.id),
        )
        == 1
    )
