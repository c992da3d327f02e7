"""The shared app factory against real PostgreSQL and Redis: health, envelope, errors, headers."""

from __future__ import annotations

from unittest.mock import ANY

import pytest
from fastapi import APIRouter, Request
from pydantic import Field

from paysys.core.clientip import client_ip
from paysys.core.config import Settings
from paysys.core.context import client_ip_var
from paysys.core.docs import swagger_ui_html
from paysys.core.errors import AppError
from paysys.core.http import create_service_app
from paysys.core.routing import JsonBodyRoute
from paysys.core.schemas import ApiModel


class Thing(ApiModel):
    amount: int = Field(gt=0)
    display_name: str = Field(max_length=10)


router = APIRouter(prefix="/api/things", route_class=JsonBodyRoute)


@router.post("")
async def create_thing(body: Thing) -> dict[str, object]:
    return {"success": True, "data": body.model_dump(by_alias=True)}


@router.put("/avatar-sized")
async def put_large(request: Request) -> dict[str, object]:
    return {"success": True, "data": {"bytes": len(await request.body())}}


profile_router = APIRouter(prefix="/api/profile", route_class=JsonBodyRoute)


@profile_router.put("")
async def put_profile(request: Request) -> dict[str, object]:
    return {"success": True, "data": {"bytes": len(await request.body())}}


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("secret internals /etc/passwd")


@router.get("/whoami")
async def whoami(request: Request) -> dict[str, object]:
    return {"clientIp": client_ip(request), "logged": client_ip_var.get()}


@router.get("/conflict")
async def conflict() -> None:
    raise AppError("EMAIL_EXISTS", "Email already registered")


@router.get("/{thing_id}")
async def get_thing(thing_id: str) -> dict[str, object]:
    return {"success": True, "data": {"id": thing_id}}


@router.delete("/{thing_id}", status_code=204)
async def delete_thing(thing_id: str) -> None:
    return None


@pytest.fixture
async def client():  # type: ignore[no-untyped-def]
    import httpx

    app = create_service_app(
        "things", [router, profile_router], settings=Settings(background_workers=False)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def test_client_ip_is_resolved_once_for_the_request() -> None:
    """The request context resolves the client with TRUSTED_PROXIES (core.clientip): what
    the logs show is what `client_ip()` gives the service."""
    import httpx

    settings = Settings(background_workers=False, trusted_proxies=["127.0.0.0/8"])
    app = create_service_app("things", [router], settings=settings)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        spoofed = {"x-forwarded-for": "198.51.100.1, 2001:DB8::9"}
        r = await c.get("/api/things/whoami", headers=spoofed)
        assert r.json() == {"clientIp": "2001:db8::9", "logged": "2001:db8::9"}
        r = await c.get("/api/things/whoami")
        assert r.json() == {"clientIp": "127.0.0.1", "logged": "127.0.0.1"}
    untrusted = create_service_app("things", [router], settings=Settings(background_workers=False))
    transport = httpx.ASGITransport(app=untrusted, client=("203.0.113.4", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/api/things/whoami", headers={"x-forwarded-for": "198.51.100.1"})
        assert r.json() == {"clientIp": "203.0.113.4", "logged": "203.0.113.4"}


async def test_live_ready_and_summary(client) -> None:  # type: ignore[no-untyped-def]
    live = await client.get("/health/live")
    assert live.status_code == 200
    assert live.json()["data"]["status"] == "alive"
    ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["data"]["checks"]
    assert checks["database"]["status"] == "up" and checks["redis"]["status"] == "up"
    summary = (await client.get("/health")).json()["data"]
    assert summary["status"] == "healthy" and summary["service"] == "things"


async def test_validation_error_names_first_field(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.post("/api/things", json={"amount": 0, "displayName": "x"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "VALIDATION_ERROR"
    assert err["message"].startswith("amount: ")
    assert err["details"][0]["field"] == "amount"
    assert err["requestId"] == r.headers["x-request-id"]


async def test_unknown_field_is_rejected(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.post("/api/things", json={"amount": 1, "displayName": "x", "role": "ADMIN"})
    assert r.status_code == 400
    assert r.json()["error"]["details"] == [{"field": "role", "message": "unknown field"}]


async def test_malformed_json(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.post(
        "/api/things", content=b'{"amount": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "INVALID_JSON"


async def test_body_over_one_mib(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.post(
        "/api/things",
        content=b"x" * (1024 * 1024 + 1),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_streamed_body_over_limit_without_length(client) -> None:  # type: ignore[no-untyped-def]
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 65536

    r = await client.post(
        "/api/things", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_unknown_route_and_wrong_method(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/api/nothing-here")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "NOT_FOUND")
    r = await client.delete("/api/things")
    assert (r.status_code, r.json()["error"]["code"]) == (405, "METHOD_NOT_ALLOWED")


async def test_405_allow_lists_every_method_of_the_path(client) -> None:  # type: ignore[no-untyped-def]
    """api-contracts §1.4: `Allow` names exactly the path's methods, from every route under
    the path template the router chose (Starlette's own header names only the first route)."""
    for method in ("DELETE", "OPTIONS", "PATCH", "TRACE"):
        r = await client.request(method, "/api/things")
        assert r.status_code == 405, method
        assert r.headers["allow"] == "POST", method
        assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
        assert r.json()["error"]["requestId"] == r.headers["x-request-id"]
    r = await client.post("/api/things/7")
    assert (r.status_code, r.headers["allow"]) == (405, "GET, DELETE")
    r = await client.head("/api/things/7")  # HEAD is not declared: refused like any other
    assert (r.status_code, r.headers["allow"]) == (405, "GET, DELETE")
    # a static path beside a template: the static route is the path (a method only the
    # template has is still served, by the template)
    r = await client.post("/api/things/whoami")
    assert (r.status_code, r.headers["allow"]) == (405, "GET")
    assert (await client.delete("/api/things/whoami")).status_code == 204
    assert (await client.get("/api/things/7")).json()["data"] == {"id": "7"}
    # routes outside the document keep their own header
    r = await client.post("/health/live")
    assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")
    # a CORS preflight is answered before any method check
    r = await client.options(
        "/api/things",
        headers={"origin": "http://localhost:4200", "access-control-request-method": "DELETE"},
    )
    assert r.status_code == 204 and "allow" not in r.headers
    assert r.headers["access-control-allow-methods"] == "GET, POST, PUT, PATCH, DELETE"


async def test_unexpected_error_hides_internals(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/api/things/boom", headers={"origin": "http://localhost:4200"})
    assert r.status_code == 500
    body = r.json()
    assert body["error"]["code"] == "INTERNAL_ERROR"
    assert "passwd" not in r.text and "RuntimeError" not in r.text
    # Even a 500 carries the request id, security headers and CORS headers.
    assert r.headers["x-request-id"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["access-control-allow-origin"] == "http://localhost:4200"


async def test_domain_error_status(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/api/things/conflict")
    assert r.status_code == 409 and r.json()["error"]["code"] == "EMAIL_EXISTS"


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [("abc-123_X.y", True), ("x" * 128, True), ("x" * 129, False), ("bad id!", False), ("", False)],
)
async def test_request_id(client, sent: str, echoed: bool) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/health/live", headers={"x-request-id": sent})
    if echoed:
        assert r.headers["x-request-id"] == sent
    else:
        import uuid

        assert uuid.UUID(r.headers["x-request-id"]).version == 4


async def test_security_headers_and_csp(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/health/live")
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "max-age" in r.headers["strict-transport-security"]
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    docs = await client.get("/docs")
    assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert docs.status_code == 200 and docs.text == swagger_ui_html("paysys things")


async def test_cors_allowed_and_disallowed(client) -> None:  # type: ignore[no-untyped-def]
    pre = await client.options(
        "/api/things",
        headers={"origin": "http://localhost:4201", "access-control-request-method": "POST"},
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "http://localhost:4201"
    assert pre.headers["access-control-max-age"] == "600"
    bad = await client.options(
        "/api/things",
        headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
    )
    assert bad.status_code == 204 and "access-control-allow-origin" not in bad.headers
    r = await client.get("/api/nothing", headers={"origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


async def test_metrics(client) -> None:  # type: ignore[no-untyped-def]
    await client.get("/health/live")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert "paysys_http_requests_total" in r.text


async def test_redis_down_degrades_but_stays_ready() -> None:
    """api-contracts §7 (revision 2): a service without Redis still serves (limits fail open,
    revocation falls back to the database), so it stays ready: 200 `degraded`, not 503."""
    import httpx

    from tests.support.servers import free_port

    app = create_service_app(
        "things",
        [router],
        settings=Settings(background_workers=False, redis_url=f"redis://127.0.0.1:{free_port()}/0"),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        r = await c.get("/health/ready")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True and "error" not in body
        assert body["data"]["status"] == "degraded"
        assert body["data"]["checks"]["redis"] == {"status": "down", "latencyMs": ANY}
        assert body["data"]["checks"]["database"] == {"status": "up", "latencyMs": ANY}
        summary = await c.get("/health")
        assert summary.status_code == 200
        assert summary.json()["data"]["status"] == "degraded"
        # and it does serve
        ok = await c.post("/api/things", json={"amount": 1, "displayName": "x"})
        assert ok.status_code == 200


async def test_database_down_is_not_ready_and_names_no_internals() -> None:
    import httpx

    from tests.support.servers import free_port

    port = free_port()
    app = create_service_app(
        "things",
        [router],
        settings=Settings(
            background_workers=False,
            database_url=f"postgresql://nobody:hunter2@127.0.0.1:{port}/nowhere",
        ),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        r = await c.get("/health/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["data"]["status"] == "not_ready"
        assert body["data"]["checks"]["database"] == {"status": "down", "latencyMs": ANY}
        assert body["data"]["checks"]["redis"]["status"] == "up"
        assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert body["error"]["message"] == "Dependency not ready: database"
        summary = await c.get("/health")
        assert summary.status_code == 503
        assert summary.json()["data"]["status"] == "unhealthy"
        for text in (r.text, summary.text):
            assert str(port) not in text and "hunter2" not in text and "Error" not in text


async def test_a_trailing_slash_is_served_like_the_path_never_redirected(client) -> None:  # type: ignore[no-untyped-def]
    """api-contracts §2.1: FastAPI's redirect_slashes answered 307 with the service's own
    address in Location; `/x/` is now `/x`, and `/x//` (no such route) is a 404."""
    plain = await client.post("/api/things", json={"amount": 1, "displayName": "x"})
    slashed = await client.post("/api/things/", json={"amount": 1, "displayName": "x"})
    assert (
        (slashed.status_code, slashed.json())
        == (plain.status_code, plain.json())
        == (
            200,
            {"success": True, "data": {"amount": 1, "displayName": "x"}},
        )
    )
    assert "location" not in slashed.headers
    bad = await client.post("/api/things/", json={"amount": 0, "displayName": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
    twice = await client.post("/api/things//", json={"amount": 1, "displayName": "x"})
    assert twice.status_code == 404 and "location" not in twice.headers
    assert (await client.get("/health/ready/")).status_code == 200


async def test_the_profile_update_alone_takes_up_to_8_mib(client) -> None:  # type: ignore[no-untyped-def]
    five = b"x" * (5 * 1024 * 1024)
    r = await client.put("/api/profile", content=five)
    assert r.status_code == 200 and r.json()["data"]["bytes"] == len(five)
    r = await client.put("/api/profile/", content=five)
    assert r.status_code == 200
    r = await client.put("/api/profile", content=b"x" * (8 * 1024 * 1024 + 1))
    assert r.status_code == 413
    assert r.json()["error"] == {
        "code": "PAYLOAD_TOO_LARGE",
        "message": "Request body exceeds 8 MiB",
        "requestId": r.headers["x-request-id"],
    }
    r = await client.put("/api/things/avatar-sized", content=five)  # elsewhere: 1 MiB
    assert r.status_code == 413 and r.json()["error"]["message"] == "Request body exceeds 1 MiB"
