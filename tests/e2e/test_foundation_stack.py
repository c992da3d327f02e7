"""The five services start as real processes and report ready; ids and envelopes hold over HTTP."""

from __future__ import annotations

import httpx

from tests.support.servers import Stack


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
