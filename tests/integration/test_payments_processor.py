"""The simulated processor: completes and fails payments through the signed webhook, shares the
queue between replicas, and survives restarts with payments in flight."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack

import httpx

from paysys.core.config import Settings
from paysys.payments.app import create_app
from tests.support.payments import body, make_user, pg, wait_for_statuses

URL = "/api/payments/webhooks/psp"


async def _start(stack: AsyncExitStack, deliver: bool = True, **overrides) -> httpx.AsyncClient:
    settings = {"background_workers": True, "processor_delay_ms": 150, **overrides}
    app = create_app(Settings(**settings))
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    await stack.enter_async_context(client)
    sent: list[bytes] = []

    async def sender(raw: bytes, headers: dict[str, str]) -> int:
        sent.append(raw)
        if not deliver:  # a webhook call that hangs: the payment stays in flight
            await asyncio.Event().wait()
        return (await client.post(URL, content=raw, headers=headers)).status_code

    app.state.webhook_sender = sender
    client.sent = sent  # type: ignore[attr-defined]
    return client


async def _history(ids: list[str]) -> dict[str, list[str]]:
    async with pg() as conn:
        rows = await conn.fetch(
            "SELECT payment_id, status FROM payment_transactions "
            "WHERE payment_id = ANY($1::uuid[]) ORDER BY seq",
            [uuid.UUID(i) for i in ids],
        )
    out: dict[str, list[str]] = {i: [] for i in ids}
    for r in rows:
        out[str(r["payment_id"])].append(r["status"])
    return out


async def _outcome_events(ids: list[str]) -> Counter[str]:
    async with pg() as conn:
        rows = await conn.fetch(
            "SELECT payload->'data'->'payment'->>'id' AS pid FROM outbox "
            "WHERE type IN ('payment.completed', 'payment.failed') "
            "AND payload->'data'->'payment'->>'id' = ANY($1::text[])",
            ids,
        )
    return Counter(r["pid"] for r in rows)


async def _create(client, n: int, fail_every: int = 3) -> list[str]:
    alice, bob = await make_user(), await make_user()
    ids = []
    for i in range(n):
        text = f"order {i} FAIL" if i % fail_every == 0 else f"order {i}"
        r = await client.post(
            "/api/payments", json=body(bob, description=text), headers=alice.headers
        )
        assert r.status_code == 201
        ids.append(r.json()["data"]["id"])
    return ids


async def test_processor_completes_and_fails_via_webhook() -> None:
    async with AsyncExitStack() as stack:
        client = await _start(stack)
        ids = await _create(client, 6)
        final = await wait_for_statuses(ids, {"completed", "failed"})
    for i, pid in enumerate(ids):
        assert final[pid] == ("failed" if i % 3 == 0 else "completed")
    history = await _history(ids)
    assert all(h == ["pending", "processing", final[pid]] for pid, h in history.items())
    assert await _outcome_events(ids) == Counter(ids)
    async with pg() as conn:
        row = await conn.fetchrow(
            "SELECT failure_reason, psp_transaction_id, processor_lease_until "
            "FROM payments WHERE id = $1",
            uuid.UUID(ids[0]),
        )
        events = await conn.fetchval(
            "SELECT count(*) FROM payment_webhook_events WHERE payment_id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids],
        )
    assert "FAIL" in row["failure_reason"] and row["psp_transaction_id"].startswith("sim_")
    assert row["processor_lease_until"] is None
    assert events == 6


async def test_restart_with_payments_in_flight_and_two_replicas() -> None:
    """Stop the only processor while payments are processing; two replicas take over:
    every payment ends once, none stuck, none processed twice."""
    async with AsyncExitStack() as first:
        client = await _start(first, deliver=False, processor_delay_ms=50)
        ids = await _create(client, 8)
        await wait_for_statuses(ids, {"processing"})
        # Every payment is claimed and its report is stuck in flight when the process stops.
        deadline = time.monotonic() + 30
        while len(client.sent) < 8:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    # Graceful stop released the leases; nothing reported yet.
    async with pg() as conn:
        leases = await conn.fetch(
            "SELECT status, processor_lease_until FROM payments WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids],
        )
    assert {r["status"] for r in leases} == {"processing"}
    assert all(r["processor_lease_until"] is None for r in leases)
    async with AsyncExitStack() as second:
        a = await _start(second, processor_delay_ms=100)
        b = await _start(second, processor_delay_ms=100)
        final = await wait_for_statuses(ids, {"completed", "failed"})
        await asyncio.sleep(0.3)  # let any duplicate delivery land before counting
        sent = a.sent + b.sent  # type: ignore[attr-defined]
    assert len(final) == 8
    history = await _history(ids)
    for pid, h in history.items():
        assert h == ["pending", "processing", final[pid]], h
    assert await _outcome_events(ids) == Counter(ids)
    assert len(sent) == 8  # the two replicas never took the same payment


async def test_crashed_processor_lease_expires_and_is_taken_over() -> None:
    async with AsyncExitStack() as stack:
        client = await _start(stack, payments_processor="none")
        ids = await _create(client, 2)
    async with pg() as conn:
        # A processor that crashed: processing, lease still held but about to run out.
        await conn.execute(
            "UPDATE payments SET status = 'processing', processor_lease_until = "
            "now() + interval '300 milliseconds' WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids],
        )
    async with AsyncExitStack() as stack:
        await _start(stack, processor_delay_ms=50)
        started = time.monotonic()
        final = await wait_for_statuses(ids, {"completed", "failed"})
        assert time.monotonic() - started >= 0.2  # not before the lease ran out
    assert set(final.values()) <= {"completed", "failed"}
    assert await _outcome_events(ids) == Counter(ids)
