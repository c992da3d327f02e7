"""Payments over real processes: one Idempotency-Key raced across two payments processes, and
the simulated processor reporting over HTTP through its own signed webhook, surviving a kill."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.support.payments import body, make_user, payment_statuses, pg, wait_for_statuses
from tests.support.servers import Stack

pytestmark = pytest.mark.e2e


async def test_one_key_across_two_processes(make_stack) -> None:
    one = make_stack(("payments",), PAYMENTS_PROCESSOR="none")
    two = make_stack(("payments",), PAYMENTS_PROCESSOR="none")
    one.start()
    two.start()
    alice, bob = await make_user(), await make_user()
    headers = {**alice.headers, "Idempotency-Key": f"e2e-{uuid.uuid4()}"}
    urls = [one.url("payments"), two.url("payments")]
    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.post(f"{urls[i % 2]}/api/payments", json=body(bob), headers=headers)
                for i in range(50)
            )
        )
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses][:3]
    assert len({r.content for r in responses}) == 1
    async with pg() as conn:
        n = await conn.fetchval("SELECT count(*) FROM payments WHERE sender_id = $1", alice.id)
    assert n == 1


@pytest.fixture
def shared_processor_paused(stack: Stack) -> Iterator[None]:
    """The shared e2e stack's processor (50 ms delay, same database) would take this test's
    payments before the test's own processor could: its payments service sits this test out."""
    stack.services["payments"].stop()
    try:
        yield
    finally:
        stack.start("payments")
        stack.services["gateway"].wait_ready()  # the gateway sees payments ready again


@pytest.mark.usefixtures("shared_processor_paused")
async def test_processor_over_http_survives_a_kill(make_stack) -> None:
    stack = make_stack(("payments",), PROCESSOR_DELAY_MS="2000", PROCESSOR_LEASE_MS="3000")
    stack.start()
    alice, bob = await make_user(), await make_user()
    url = stack.url("payments")
    ids = []
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(6):
            text = f"e2e {i} FAIL" if i % 2 else f"e2e {i}"
            r = await client.post(
                f"{url}/api/payments", json=body(bob, description=text), headers=alice.headers
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["data"]["id"])
    # Kill while at least one payment is mid-flight (claimed, webhook not yet sent); the long
    # delay keeps that window wide even on a loaded CI machine.
    await wait_for_statuses(ids, {"processing", "completed", "failed"}, some="processing")
    stack.services["payments"].kill()  # SIGKILL with payments in flight
    in_flight = [pid for pid, s in (await payment_statuses(ids)).items() if s == "processing"]
    stack.start("payments")
    final = await wait_for_statuses(ids, {"completed", "failed"})
    for i, pid in enumerate(ids):
        assert final[pid] == ("failed" if i % 2 else "completed")
    async with pg() as conn:
        rows = await conn.fetch(
            "SELECT payment_id, status FROM payment_transactions "
            "WHERE payment_id = ANY($1::uuid[]) ORDER BY seq",
            [uuid.UUID(i) for i in ids],
        )
        outcomes = await conn.fetch(
            "SELECT payload->'data'->'payment'->>'id' AS pid FROM outbox "
            "WHERE type IN ('payment.completed', 'payment.failed') "
            "AND payload->'data'->'payment'->>'id' = ANY($1::text[])",
            ids,
        )
    history: dict[str, list[str]] = {i: [] for i in ids}
    for row in rows:
        history[str(row["payment_id"])].append(row["status"])
    for pid in ids:
        assert history[pid] == ["pending", "processing", final[pid]], (pid, history[pid])
    assert Counter(r["pid"] for r in outcomes) == Counter(ids)
    assert in_flight, "the kill should have caught payments in flight"
