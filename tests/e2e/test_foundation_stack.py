"""The five services start as real processes and report ready; ids and envelopes hold over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import httpx

from tests.support.servers import RedisServer, Stack, free_port


def test_every_service_is_ready(stack: Stack) -> None:
    for name, service in stack.services.items():
        r = httpx.get(f"{service.url}/health/ready", timeout=5)
        assert r.status_code == 200, (name, r.text)
        assert r.json()["data"]["service"] == name
        live = httpx.get(f"{service.url}/health/live", timeout=5).json()
        assert live == {"success": True, "data": live["data"]}
        assert live["data"]["status"] == "alive"


def test_openapi_documents_are_served(stack: Stack) -> None:
    for name in ("auth", "payments", "admin", "profile"):
        r = httpx.get(f"{stack.url(name)}/openapi.json", timeout=5)
        assert r.status_code == 200
        assert r.json()["info"]["title"] == f"paysys {name}"


def test_unknown_route_envelope_over_http(stack: Stack) -> None:
    r = httpx.get(
        f"{stack.url('auth')}/api/auth/definitely-not-a-route",
        headers={"x-request-id": "e2e-foundation-1"},
        timeout=5,
    )
    assert r.status_code == 404
    assert r.headers["x-request-id"] == "e2e-foundation-1"
    assert r.json()["error"] == {
        "code": "NOT_FOUND",
        "message": "Route not found",
        "requestId": "e2e-foundation-1",
    }


def test_redis_outage_degrades_but_keeps_every_process_ready_then_recovers(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """api-contracts §7 (revision 2): with Redis stopped every service and the gateway still
    serve, so /health/ready stays 200 and says `degraded` with the failing check (a 503 here would
    take every pod out of its Kubernetes Service at once); once Redis is back they report
    `ready` again by themselves, without a restart."""
    redis = RedisServer(free_port(), tmp_path / "redis")
    redis.start()
    try:
        running = make_stack(REDIS_URL=redis.url)
        running.start()
        redis.stop()
        for name in running.services:
            body = wait_for_status(running.url(name), "degraded")
            assert body["success"] is True and "error" not in body
            assert body["data"]["checks"]["redis"] == {"status": "down", "latencyMs": ANY}
            if name != "gateway":
                assert body["data"]["checks"]["database"]["status"] == "up"
        redis.start()
        # Stale pooled connections are replaced at once (no restart, no back-off to wait out).
        for name in running.services:
            body = wait_for_status(running.url(name), "ready")
            assert body["data"]["checks"]["redis"]["status"] == "up"
    finally:
        redis.stop()


def wait_for_status(base: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    """GET /health/ready until it says `status` (results are shared for 1 s); always 200."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{base}/health/ready", timeout=10)
        assert r.status_code == 200, (base, r.text)
        body: dict[str, Any] = r.json()
        if body["data"]["status"] == status or time.monotonic() > deadline:
            assert body["data"]["status"] == status, (base, body)
            return body
        time.sleep(0.2)


def test_one_service_down_never_makes_the_gateway_unready(
    make_stack: Callable[..., Stack],
) -> None:
    """A gateway whose payments, admin and profile are unreachable stays ready (degraded): the
    routes of the missing services answer 502/503 by themselves; the others work."""
    dead = {
        var: f"http://127.0.0.1:{free_port()}"
        for var in ("PAYMENTS_SERVICE_URL", "ADMIN_SERVICE_URL", "PROFILE_SERVICE_URL")
    }
    running = make_stack(("auth", "gateway"), UPSTREAM_PROBE_INTERVAL="3600", **dead)
    running.start()
    ready = httpx.get(f"{running.url()}/health/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    data = ready.json()["data"]
    assert data["status"] == "degraded"
    assert data["checks"]["gateway"]["status"] == "up"
    assert data["checks"]["auth"]["status"] == "up"
    for name in ("payments", "admin", "profile"):
        assert data["checks"][name] == {"status": "down", "latencyMs": ANY}
    for url in dead.values():
        assert url.rsplit(":", 1)[1] not in ready.text
    assert httpx.get(f"{running.url()}/health", timeout=10).status_code == 200
    webhook = httpx.post(f"{running.url()}/api/payments/webhooks/psp", content=b"{}", timeout=10)
    assert webhook.status_code == 502 and webhook.json()["error"]["code"] == "BAD_GATEWAY"
    me = httpx.get(f"{running.url()}/api/auth/me", timeout=10)
    assert me.status_code == 401  # auth's routes still answer
