"""Payment limits per currency over real processes (api-contracts §10): an admin sets
`payment.maxAmount.KWD` through the gateway, the payments service learns of it from the
`config.updated` event (relay → stream → its consumer) and refuses a KWD payment above it, while
the USD limit never applies to KWD; bad per-currency keys are refused with the 400 envelope."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.admin import poll
from tests.support.payments import body, make_user

pytestmark = pytest.mark.e2e


async def test_kwd_limit_set_by_admin_is_enforced_through_the_gateway(stack) -> None:  # type: ignore[no-untyped-def]
    admin, alice, bob = await make_user("ADMIN"), await make_user(), await make_user("VENDOR")
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as client:

        async def put(changes: dict[str, Any]) -> httpx.Response:
            return await client.put("/api/admin/config", json=changes, headers=admin.headers)

        async def pay(amount: str, currency: str) -> httpx.Response:
            payment = body(bob, amount=amount, currency=currency)
            return await client.post("/api/payments", json=payment, headers=alice.headers)

        # Bad per-currency keys: 400 envelope, nothing stored.
        for changes, field in [
            ({"payment.maxAmount.XYZ": "10"}, "payment.maxAmount.XYZ"),
            ({"payment.maxAmount.KWD": "10.0001"}, "payment.maxAmount.KWD"),
            (
                {"payment.minAmount.KWD": "11", "payment.maxAmount.KWD": "10"},
                "payment.minAmount.KWD",
            ),
        ]:
            r = await put(changes)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert r.json()["success"] is False and error["code"] == "VALIDATION_ERROR"
            assert error["details"][0]["field"] == field and error["requestId"]

        r = await put({"payment.maxAmount": "1000.00", "payment.maxAmount.KWD": "2000.000"})
        assert r.status_code == 200, r.text
        try:
            # The payments service reloads on the event (its cache would otherwise hold 5 s).
            async def refused() -> httpx.Response | None:
                r = await pay("2000.001", "KWD")
                return r if r.status_code == 400 else None

            r = await poll(refused, timeout=15, interval=0.1)
            assert r.json()["error"] == {
                "code": "VALIDATION_ERROR",
                "message": "amount: must not exceed 2000.000 KWD",
                "details": [{"field": "amount", "message": "must not exceed 2000.000 KWD"}],
                "requestId": r.headers["X-Request-ID"],
            }
            r = await pay("1500.000", "KWD")  # above USD's 1000.00, within KWD's own limit
            assert r.status_code == 201, r.text
            assert r.json()["data"]["amount"] == "1500.000"
            r = await pay("1000.01", "USD")
            assert r.status_code == 400 and "1000.00 USD" in r.json()["error"]["message"]
        finally:
            r = await put({"payment.maxAmount": "100000000.00", "payment.maxAmount.KWD": None})
            assert r.status_code == 200, r.text
        # Unset: KWD has no limit of its own again, and USD's default is back.
        await poll(lambda: _created(pay("2000.001", "KWD")), timeout=15, interval=0.1)
        assert (await pay("1000.01", "USD")).status_code == 201


async def _created(response: Any) -> bool:
    return bool((await response).status_code == 201)
