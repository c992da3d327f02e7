"""PSP webhook: signature, tolerance, replay (same eventId), state machine."""

from __future__ import annotations

import time
import uuid

from paysys.payments import webhooks
from tests.support.payments import body, events_of, make_user, set_status, signed

URL = "/api/payments/webhooks/psp"


async def _pending(client) -> str:
    alice, bob = await make_user(), await make_user()
    r = await client.post("/api/payments", json=body(bob), headers=alice.headers)
    return r.json()["data"]["id"]


async def test_signed_event_applies_once(app_client) -> None:
    client = await app_client("payments")
    pid = await _pending(client)
    await set_status(pid, "processing")
    event = {
        "eventId": f"evt_{uuid.uuid4()}",
        "paymentId": pid,
        "status": "completed",
        "pspTransactionId": "psp_1",
    }
    raw, headers = signed(event)
    r = await client.post(URL, content=raw, headers=headers)
    assert r.status_code == 200 and r.json() == {"success": True, "data": {"received": True}}
    # Same eventId again (even re-signed later): nothing changes.
    raw, headers = signed(event)
    r = await client.post(URL, content=raw, headers=headers)
    assert r.status_code == 200
    admin = await make_user("ADMIN")
    p = (await client.get(f"/api/payments/{pid}", headers=admin.headers)).json()["data"]
    assert p["status"] == "completed" and p["pspTransactionId"] == "psp_1"
    assert p["completedAt"] is not None
    assert [t["status"] for t in p["transactions"]] == ["pending", "completed"]
    types = [e["type"] for e in await events_of(pid)]
    assert types.count("payment.completed") == 1 and types.count("payment.status_changed") == 1


async def test_pending_to_completed_walks_through_processing(app_client) -> None:
    client = await app_client("payments")
    pid = await _pending(client)
    raw, headers = signed({"eventId": "e-walk-" + pid, "paymentId": pid, "status": "completed"})
    assert (await client.post(URL, content=raw, headers=headers)).status_code == 200
    admin = await make_user("ADMIN")
    p = (await client.get(f"/api/payments/{pid}", headers=admin.headers)).json()["data"]
    assert [t["status"] for t in p["transactions"]] == ["pending", "processing", "completed"]


async def test_failure_reason_and_invalid_transition(app_client) -> None:
    client = await app_client("payments")
    pid = await _pending(client)
    await set_status(pid, "processing")
    raw, headers = signed(
        {
            "eventId": "f-" + pid,
            "paymentId": pid,
            "status": "failed",
            "failureReason": "card declined",
        }
    )
    assert (await client.post(URL, content=raw, headers=headers)).status_code == 200
    admin = await make_user("ADMIN")
    p = (await client.get(f"/api/payments/{pid}", headers=admin.headers)).json()["data"]
    assert p["status"] == "failed" and p["failureReason"] == "card declined"
    # failed is terminal: a later "completed" event is refused and not recorded.
    event = {"eventId": "c-" + pid, "paymentId": pid, "status": "completed"}
    raw, headers = signed(event)
    r = await client.post(URL, content=raw, headers=headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "INVALID_STATUS_TRANSITION"
    # Unknown payment → 404.
    raw, headers = signed({"eventId": "u-1", "paymentId": str(uuid.uuid4()), "status": "completed"})
    r = await client.post(URL, content=raw, headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "PAYMENT_NOT_FOUND"


async def test_signature_rules(app_client) -> None:
    client = await app_client("payments")
    pid = await _pending(client)
    event = {"eventId": "sig-" + pid, "paymentId": pid, "status": "processing"}
    raw, good = signed(event)
    cases = {
        "missing": {"Content-Type": "application/json"},
        "wrong secret": signed(event, secret="another-secret")[1],
        "too old": signed(event, t=int(time.time()) - 301)[1],
        # (+330: a loaded machine may take a few seconds to handle the request)
        "too new": signed(event, t=int(time.time()) + 330)[1],
        "malformed": {webhooks.HEADER: "garbage"},
        "no v1": {webhooks.HEADER: f"t={int(time.time())}"},
        "non-hex": {webhooks.HEADER: f"t={int(time.time())},v1=zz".encode() + b"\xe9"},
    }
    for name, headers in cases.items():
        r = await client.post(URL, content=raw, headers=headers)
        assert r.status_code == 400, name
        assert r.json()["error"]["code"] == "INVALID_SIGNATURE", name
    # Tampered body with a valid header for the original.
    r = await client.post(URL, content=raw.replace(b"processing", b"completed"), headers=good)
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_SIGNATURE"
    # Within tolerance (299 s old) is fine; several v1 values (rotation) are fine.
    t = int(time.time()) - 299
    old_sig = webhooks.sign(raw, "another-secret", t).split(",")[1]
    header = webhooks.sign(raw, client.app.state.settings.psp_webhook_secret, t) + "," + old_sig
    r = await client.post(URL, content=raw, headers={webhooks.HEADER: header})
    assert r.status_code == 200, r.text
    # Signed but malformed payloads are validation errors.
    for bad in (b"{not json", b'{"eventId": "x", "paymentId": "nope", "status": "completed"}'):
        raw2, headers2 = signed(bad)
        r = await client.post(URL, content=raw2, headers=headers2)
        assert r.status_code == 400 and r.json()["error"]["code"] in {
            "INVALID_JSON",
            "VALIDATION_ERROR",
        }


def test_verify_unit() -> None:
    raw = b"{}"
    header = webhooks.sign(raw, "s", 1000)
    assert webhooks.verify(raw, header, "s", now=1300) == 1000
    for now in (699.0, 1301.0):
        try:
            webhooks.verify(raw, header, "s", now=now)
        except Exception as exc:
            assert getattr(exc, "code", None) == "INVALID_SIGNATURE"
        else:  # pragma: no cover
            raise AssertionError("outside tolerance accepted")
