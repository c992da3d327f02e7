"""The five services start as real processes and report ready; ids and envelopes hold over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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


def test_redis_outage_fails_readiness_then_recovers_without_restart(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """Issue 2: stopping Redis turns /health/ready into 503 naming the failed check; starting
    it again recovers the running processes by themselves."""
    redis = RedisServer(free_port(), tmp_path / "redis")
    redis.start()
    try:
        running = make_stack(REDIS_URL=redis.url)
        running.start()
        redis.stop()
        for name in running.services:
            r = httpx.get(f"{running.url(name)}/health/ready", timeout=10)
            assert r.status_code == 503, (name, r.text)
            body = r.json()
            assert body["data"]["checks"]["redis"]["status"] == "down"
            assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert "redis" in body["error"]["message"]
        redis.start()
        # The first check after Redis is back already passes: stale pooled connections are
        # replaced at once (no restart, no waiting for a back-off).
        for name in running.services:
            r = httpx.get(f"{running.url(name)}/health/ready", timeout=10)
            assert r.status_code == 200, (name, r.text)
    finally:
        redis.stop()
