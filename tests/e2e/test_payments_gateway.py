"""Payments through the gateway (real processes): the journey a client makes, with the
Idempotency-Key replay header, the processor finishing the payment via its signed webhook, and
the webhook route reachable without a bearer token."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from tests.support.payments import body, make_user, signed

pytestmark = pytest.mark.e2e


async def test_payment_journey_through_the_gateway(stack) -> None:
    gateway = stack.url("gateway")
    alice, bob = await make_user(), await make_user("VENDOR")
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        headers = {**alice.headers, "Idempotency-Key": f"gw-{uuid.uuid4()}"}
        first = await client.post("/api/payments", json=body(bob, amount="42.10"), headers=headers)
        assert first.status_code == 201, first.text
        again = await client.post("/api/payments", json=body(bob, amount="42.10"), headers=headers)
        assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        pid = first.json()["data"]["id"]
        # The simulated processor completes it through the signed webhook.
        deadline = time.monotonic() + 60
        while True:
            r = await client.get(f"/api/payments/{pid}", headers=bob.headers)
            assert r.status_code == 200
            if r.json()["data"]["status"] == "completed":
                break
            assert time.monotonic() < deadline, r.json()["data"]["status"]
            await asyncio.sleep(0.2)
        statuses = [t["status"] for t in r.json()["data"]["transactions"]]
        assert statuses == ["pending", "processing", "completed"]
        # Strangers see nothing; lists are per caller.
        mallory = await make_user()
        r = await client.get(f"/api/payments/{pid}", headers=mallory.headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "PAYMENT_NOT_FOUND"
        r = await client.get("/api/payments?status=completed", headers=alice.headers)
        assert [p["id"] for p in r.json()["data"]["payments"]] == [pid]
        r = await client.get("/api/payments?limit=1000", headers=alice.headers)
        assert r.status_code == 400
        # The webhook needs no bearer token at the gateway, only its signature.
        raw, hook = signed({"eventId": f"gw-{pid}", "paymentId": pid, "status": "completed"})
        r = await client.post("/api/payments/webhooks/psp", content=raw, headers=hook)
        assert r.status_code == 200, r.text
        r = await client.post(
            "/api/payments/webhooks/psp", content=raw, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_SIGNATURE"
