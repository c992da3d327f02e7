"""Drill (d) of issue 13, through the real gateway in front of the real services (and the
services directly): a trailing slash is answered like the path without it, never redirected to
a service's address; public health and metrics name no internal URL, host or port; the 1 MiB
body limit holds at the gateway before anything is forwarded (api-contracts §2.1)."""

from __future__ import annotations

import uuid
from unittest.mock import ANY

import httpx

from tests.support.gateway import forget_auth_buckets
from tests.support.servers import Stack

UPSTREAMS = ("auth", "payments", "admin", "profile")


def internal_addresses(stack: Stack) -> list[str]:
    return [f":{stack.services[name].port}" for name in UPSTREAMS] + ["127.0.0.1"]


def test_a_trailing_slash_is_answered_like_the_path_never_redirected(stack: Stack) -> None:
    forget_auth_buckets()
    credentials = {"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com", "password": "Wr0ng-pass!"}
    for base in (stack.url("gateway"), stack.url("auth")):
        with httpx.Client(base_url=base, timeout=20, follow_redirects=False) as client:
            plain = client.post("/api/auth/login", json=credentials)
            slashed = client.post("/api/auth/login/", json=credentials)
            assert plain.status_code == slashed.status_code == 401, (base, slashed.text)
            assert plain.json()["error"]["code"] == slashed.json()["error"]["code"]
            assert slashed.json()["error"]["code"] == "INVALID_CREDENTIALS"
            anonymous = client.get("/api/auth/me/")  # the edge check, and auth's own
            assert anonymous.status_code == 401
            unknown = client.get("/api/auth/no-such-route/")
            assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
            for response in (slashed, anonymous, unknown):
                assert "location" not in response.headers
                assert response.status_code < 300 or response.status_code >= 400
    gateway = httpx.get(f"{stack.url('gateway')}/health/ready/", timeout=10)
    assert gateway.status_code == 200 and gateway.json()["data"]["service"] == "gateway"


def test_public_health_and_metrics_name_no_internal_address(stack: Stack) -> None:
    gateway = stack.url("gateway")
    with httpx.Client(base_url=gateway, timeout=20) as client:
        health = client.get("/health")
        ready = client.get("/health/ready")
        client.get("/api/payments", headers={"authorization": "Bearer x"})  # some traffic
        metrics = client.get("/metrics")
    assert health.status_code == ready.status_code == 200
    data = health.json()["data"]
    for name in UPSTREAMS:
        assert data["checks"][name] == {
            "status": "up",
            "latencyMs": ANY,
            "instances": [{"circuit": "closed", "ready": True}],
        }
    assert ready.json()["data"]["status"] == "ready"
    assert 'paysys_gateway_upstream_ready{service="payments",upstream="0"} 1.0' in metrics.text
    for response in (health, ready, metrics):
        for address in internal_addresses(stack):
            assert address not in response.text, (response.url, address)
        assert "http://" not in response.text
    for name in UPSTREAMS:  # the services' own public health: statuses and latencies only
        own = httpx.get(f"{stack.url(name)}/health", timeout=10).json()["data"]["checks"]
        assert own == {
            "database": {"status": "up", "latencyMs": ANY},
            "redis": {"status": "up", "latencyMs": ANY},
        }


def test_the_gateway_refuses_oversized_bodies_before_forwarding(stack: Stack) -> None:
    gateway = stack.url("gateway")
    big = b"{" + b" " * (1024 * 1024) + b"}"
    r = httpx.post(
        f"{gateway}/api/payments/webhooks/psp",  # public: no token needed to reach payments
        content=big,
        headers={"content-type": "application/json"},
        timeout=20,
    )
    assert r.status_code == 413
    assert r.json()["error"] == {
        "code": "PAYLOAD_TOO_LARGE",
        "message": "Request body exceeds 1 MiB",
        "requestId": r.headers["x-request-id"],
    }
    assert "ratelimit" not in r.headers  # refused before the proxy ran at all
