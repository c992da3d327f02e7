"""Through the gateway to the real services (the run's shared stack): one client, one URL."""

from __future__ import annotations

import json
import re
import uuid

import httpx

from tests.support.gateway import forget_auth_buckets
from tests.support.servers import Stack

PASSWORD = "Gateway-Journey-1!"


def test_journey_through_the_gateway(stack: Stack) -> None:
    forget_auth_buckets()
    email = f"gw-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=stack.url("gateway"), timeout=20) as client:
        r = client.post(
            "/api/auth/register",
            json={"email": email, "password": PASSWORD, "name": "Gateway Journey"},
            headers={"x-request-id": "gw-journey-1"},
        )
        assert r.status_code == 201, r.text
        assert r.headers["x-request-id"] == "gw-journey-1"
        assert r.headers["ratelimit-policy"].startswith('"auth-register";')
        access = r.json()["data"]["accessToken"]
        bearer = {"authorization": f"Bearer {access}"}

        me = client.get("/api/auth/me", headers=bearer)
        assert me.status_code == 200 and me.json()["data"]["email"] == email
        assert me.headers["ratelimit-policy"].startswith('"default";')

        payments = client.get("/api/payments", headers=bearer)
        assert payments.status_code == 200
        assert "pagination" in payments.json()["data"]
        assert client.get("/api/profile", headers=bearer).status_code == 200

        # edge checks, with the real services behind
        denied = client.get("/api/admin/users", headers=bearer)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "FORBIDDEN"
        assert client.get("/api/payments").json()["error"]["code"] == "UNAUTHORIZED"
        # the webhook is public at the edge; the payments service checks its signature
        hook = client.post("/api/payments/webhooks/psp", json={"type": "payment.succeeded"})
        assert hook.status_code == 400
        assert hook.json()["error"]["code"] == "INVALID_SIGNATURE"
        # a service's own error envelope comes back unchanged, with the round-tripped id
        missing = client.get(
            f"/api/payments/{uuid.uuid4()}", headers={**bearer, "x-request-id": "gw-journey-2"}
        )
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "PAYMENT_NOT_FOUND"
        assert missing.json()["error"]["requestId"] == "gw-journey-2"

        # logout revokes the access token: refused from then on, at the edge
        assert client.post("/api/auth/logout", headers=bearer).status_code == 200
        after = client.get("/api/payments", headers=bearer)
        assert after.status_code == 401 and after.json()["error"]["code"] == "TOKEN_INVALID"


def test_merged_openapi_of_the_real_services(stack: Stack) -> None:
    merged = httpx.get(f"{stack.url('gateway')}/openapi.json", timeout=20).json()
    assert merged["openapi"] == "3.1.0"
    for name in ("auth", "payments", "admin", "profile"):
        own = httpx.get(f"{stack.url(name)}/openapi.json", timeout=20).json()
        assert set(own["paths"]) <= set(merged["paths"]), name
    for path in ("/api/auth/login", "/api/payments", "/api/admin/users", "/api/profile"):
        assert path in merged["paths"]
    # every $ref of the merged document resolves inside it
    text = httpx.get(f"{stack.url('gateway')}/openapi.json", timeout=20).text
    for ref in set(re.findall(r'"\$ref":"#/components/([^/"]+)/([^"]+)"', text)):
        assert ref[1] in json.loads(text)["components"][ref[0]], ref
    health = httpx.get(f"{stack.url('gateway')}/health", timeout=20).json()["data"]
    for name in ("auth", "payments", "admin", "profile", "redis"):
        assert health["checks"][name]["status"] == "up"
