"""Every admin route: 401 without a token, 403 FORBIDDEN for CUSTOMER and VENDOR, revoked
tokens refused."""

from __future__ import annotations

import uuid

import pytest

from tests.support.admin import bearer, insert_user, token_for

ANY_ID = str(uuid.uuid4())

# Every route of api-contracts §5 (method, path, body).
ADMIN_ROUTES = [
    ("GET", "/api/admin/users", None),
    ("POST", "/api/admin/users", {"email": "x@example.com", "password": "x", "name": "x"}),
    ("GET", f"/api/admin/users/{ANY_ID}", None),
    ("PUT", f"/api/admin/users/{ANY_ID}", {"name": "x"}),
    ("PATCH", f"/api/admin/users/{ANY_ID}", {"name": "x"}),
    ("PUT", f"/api/admin/users/{ANY_ID}/role", {"role": "ADMIN"}),
    ("PATCH", f"/api/admin/users/{ANY_ID}/role", {"role": "ADMIN"}),
    ("PATCH", f"/api/admin/users/{ANY_ID}/status", {"isActive": False}),
    ("DELETE", f"/api/admin/users/{ANY_ID}", None),
    ("GET", "/api/admin/payments", None),
    ("GET", "/api/admin/audit-logs", None),
    ("GET", "/api/admin/audit-logs/actions", None),
    ("GET", "/api/admin/stats", None),
    ("GET", "/api/admin/health", None),
    ("GET", "/api/admin/config", None),
    ("PUT", "/api/admin/config", {"payment.minAmount": "1.00"}),
    ("GET", "/api/admin/config/payment.minAmount", None),
    ("PUT", "/api/admin/config/payment.minAmount", {"value": "1.00"}),
]


@pytest.fixture
async def client(app_client, clean_state):  # type: ignore[no-untyped-def]
    return await app_client("admin")


def test_route_list_covers_the_app() -> None:
    from paysys.admin.api import router

    served = {
        (method, route.path)  # type: ignore[attr-defined]
        for route in router.routes
        for method in route.methods  # type: ignore[attr-defined]
    }
    listed = {(m, p.replace(ANY_ID, "{user_id}")) for m, p, _ in ADMIN_ROUTES}
    listed = {(m, p.replace("config/payment.minAmount", "config/{key}")) for m, p in listed}
    assert served == listed


@pytest.mark.parametrize("role", ["CUSTOMER", "VENDOR"])
async def test_non_admins_get_403_on_every_route(client, role) -> None:  # type: ignore[no-untyped-def]
    user = await insert_user(role=role)
    headers = bearer(token_for(user))
    for method, path, body in ADMIN_ROUTES:
        r = await client.request(method, path, json=body, headers=headers)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "FORBIDDEN"


async def test_anonymous_gets_401_on_every_route(client) -> None:  # type: ignore[no-untyped-def]
    for method, path, body in ADMIN_ROUTES:
        r = await client.request(method, path, json=body)
        assert r.status_code == 401, (method, path)
        assert r.json()["error"]["code"] == "UNAUTHORIZED"
    r = await client.get("/api/admin/users", headers=bearer("not.a.jwt"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_INVALID"


async def test_forged_admin_claim_is_refused(client) -> None:  # type: ignore[no-untyped-def]
    from paysys.core.config import Settings

    customer = await insert_user(role="CUSTOMER")
    forged = token_for(
        {**customer, "role": "ADMIN"},
        Settings(jwt_access_secret="another-secret-that-is-long-enough-0123456789"),
    )
    r = await client.get("/api/admin/users", headers=bearer(forged))
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_INVALID"
