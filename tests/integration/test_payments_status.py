"""Status machine and permissions: every allowed and forbidden transition, BOLA."""

from __future__ import annotations

import itertools
import uuid

import pytest

from paysys.payments.states import STATUSES, TRANSITIONS
from tests.support.payments import body, events_of, make_user, set_status

ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in sorted(targets)]
FORBIDDEN = [(a, b) for a, b in itertools.product(STATUSES, STATUSES) if b not in TRANSITIONS[a]]


async def _payment(client, sender, recipient, status: str = "pending", **extra) -> str:
    r = await client.post("/api/payments", json=body(recipient, **extra), headers=sender.headers)
    assert r.status_code == 201, r.text
    pid = r.json()["data"]["id"]
    if status != "pending":
        await set_status(pid, status)
    return pid


async def test_every_allowed_transition_by_admin(app_client) -> None:
    client = await app_client("payments")
    admin, alice, bob = await make_user("ADMIN"), await make_user(), await make_user()
    for current, target in ALLOWED:
        pid = await _payment(client, alice, bob, current)
        r = await client.patch(
            f"/api/payments/{pid}/status",
            json={"status": target, "reason": f"  to {target} "},
            headers=admin.headers,
        )
        assert r.status_code == 200, (current, target, r.text)
        p = r.json()["data"]
        assert p["status"] == target
        assert (p["completedAt"] is not None) == (target == "completed")
        assert p["failureReason"] == (f"to {target}" if target == "failed" else None)
        detail = (await client.get(f"/api/payments/{pid}", headers=admin.headers)).json()["data"]
        assert [t["status"] for t in detail["transactions"]] == ["pending", target]
        assert detail["transactions"][-1]["statusMessage"] == f"to {target}"
        types = [e["type"] for e in await events_of(pid)]
        expected = ["payment.created", "payment.status_changed"]
        if target in ("completed", "failed", "cancelled"):
            expected.append(f"payment.{target}")
        assert types == expected, (current, target)
        changed = (await events_of(pid, ("payment.status_changed",)))[0]
        assert changed["data"] == {
            "paymentId": pid,
            "senderId": str(alice.id),
            "recipientId": str(bob.id),
            "oldStatus": current,
            "newStatus": target,
            "reason": f"to {target}",
            "amount": p["amount"],
            "currency": p["currency"],
            "type": p["type"],
            "updatedAt": p["updatedAt"],
        }
        assert changed["actorId"] == str(admin.id)


@pytest.mark.parametrize(("current", "target"), FORBIDDEN)
async def test_forbidden_transitions_are_409_and_change_nothing(
    app_client, current, target
) -> None:
    client = await app_client("payments")
    admin, alice, bob = await make_user("ADMIN"), await make_user(), await make_user()
    pid = await _payment(client, alice, bob, current)
    r = await client.patch(
        f"/api/payments/{pid}/status", json={"status": target}, headers=admin.headers
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "INVALID_STATUS_TRANSITION"
    detail = (await client.get(f"/api/payments/{pid}", headers=admin.headers)).json()["data"]
    assert detail["status"] == current and len(detail["transactions"]) == 1
    assert [e["type"] for e in await events_of(pid)] == ["payment.created"]


async def test_sender_may_only_cancel_pending(app_client) -> None:
    client = await app_client("payments")
    alice, bob = await make_user(), await make_user()
    pid = await _payment(client, alice, bob)
    r = await client.patch(
        f"/api/payments/{pid}/status", json={"status": "completed"}, headers=alice.headers
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    r = await client.post(f"/api/payments/{pid}/cancel", json={"reason": ""}, headers=alice.headers)
    assert r.status_code == 200 and r.json()["data"]["status"] == "cancelled"
    changed = (await events_of(pid, ("payment.status_changed",)))[0]
    assert changed["data"]["reason"] is None
    # Cancelling again: allowed role, impossible transition.
    r = await client.post(f"/api/payments/{pid}/cancel", headers=alice.headers)
    assert r.status_code == 409
    pid2 = await _payment(client, alice, bob, "processing")
    r = await client.patch(
        f"/api/payments/{pid2}/status", json={"status": "cancelled"}, headers=alice.headers
    )
    assert r.status_code == 409
    pid3 = await _payment(client, alice, bob)
    r = await client.patch(
        f"/api/payments/{pid3}/status", json={"status": "cancelled"}, headers=alice.headers
    )
    assert r.status_code == 200 and r.json()["data"]["status"] == "cancelled"
    assert [e["type"] for e in await events_of(pid3)][-1] == "payment.cancelled"


@pytest.mark.parametrize("status", STATUSES)
async def test_recipient_gets_403_whatever_the_state(app_client, status) -> None:
    client = await app_client("payments")
    alice, bob = await make_user(), await make_user("VENDOR")
    pid = await _payment(client, alice, bob, status)
    for target in STATUSES:
        r = await client.patch(
            f"/api/payments/{pid}/status", json={"status": target}, headers=bob.headers
        )
        assert r.status_code == 403, (status, target)
    r = await client.post(f"/api/payments/{pid}/cancel", headers=bob.headers)
    assert r.status_code == 403


async def test_bola_strangers_get_404_on_get_status_and_cancel(app_client) -> None:
    client = await app_client("payments")
    alice, bob, mallory = await make_user(), await make_user(), await make_user("VENDOR")
    pid = await _payment(client, alice, bob)
    missing = str(uuid.uuid4())
    for target_id in (pid, missing, "not-a-uuid"):
        r = await client.get(f"/api/payments/{target_id}", headers=mallory.headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "PAYMENT_NOT_FOUND"
        r = await client.patch(
            f"/api/payments/{target_id}/status",
            json={"status": "cancelled"},
            headers=mallory.headers,
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "PAYMENT_NOT_FOUND"
        r = await client.post(f"/api/payments/{target_id}/cancel", headers=mallory.headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "PAYMENT_NOT_FOUND"
    # The recipient and an admin can see it.
    assert (await client.get(f"/api/payments/{pid}", headers=bob.headers)).status_code == 200
    admin = await make_user("ADMIN")
    assert (await client.get(f"/api/payments/{pid}", headers=admin.headers)).status_code == 200
    r = await client.get(f"/api/payments/{pid}", headers=alice.headers)
    assert r.json()["data"]["status"] == "pending"


async def test_status_body_validation(app_client) -> None:
    client = await app_client("payments")
    admin, alice, bob = await make_user("ADMIN"), await make_user(), await make_user()
    pid = await _payment(client, alice, bob)
    for bad in (
        {"status": "done"},
        {},
        {"status": "failed", "extra": 1},
        {"status": "failed", "reason": "x" * 501},
    ):
        r = await client.patch(f"/api/payments/{pid}/status", json=bad, headers=admin.headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR", bad
    r = await client.post(f"/api/payments/{pid}/cancel", json={"nope": 1}, headers=admin.headers)
    assert r.status_code == 400
    r = await client.post(f"/api/payments/{pid}/cancel", headers=admin.headers)
    assert r.status_code == 200 and r.json()["data"]["status"] == "cancelled"
