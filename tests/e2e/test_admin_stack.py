"""Admin over real processes: customers get 403 on every admin route (gateway and direct), a
deactivated user's tokens fail at once on every service, the audit trail is built from the
event stream, including after the admin service was killed while events were produced.

Registration and login go to the auth service directly (the gateway's per-IP auth rate limit
is shared by the whole e2e run).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.integration.test_admin_access import ADMIN_ROUTES
from tests.support.admin import poll
from tests.support.auth import PASSWORD, admin_login, bearer, register, unique_email
from tests.support.servers import Stack


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_non_admins_get_403_on_every_admin_route_via_gateway_and_directly(
    stack: Stack,
) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth,
        httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15) as gateway,
        httpx.AsyncClient(base_url=stack.url("admin"), timeout=15) as admin,
    ):
        for role in ("CUSTOMER", "VENDOR"):
            data = await register(auth, email=unique_email("e2e-403"), role=role)
            headers = bearer(data["accessToken"])
            for client in (gateway, admin):
                for method, path, body in ADMIN_ROUTES:
                    r = await client.request(method, path, json=body, headers=headers)
                    assert r.status_code == 403, (role, str(client.base_url), method, path, r.text)
                    assert _code(r) == "FORBIDDEN"
            r = await gateway.get("/api/admin/users")
            assert r.status_code == 401


async def test_deactivated_users_tokens_fail_at_once_everywhere(stack: Stack) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth,
        httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15) as gateway,
        httpx.AsyncClient(base_url=stack.url("payments"), timeout=15) as payments,
        httpx.AsyncClient(base_url=stack.url("profile"), timeout=15) as profile,
        httpx.AsyncClient(base_url=stack.url("admin"), timeout=15) as admin_direct,
    ):
        admin_token, _ = await admin_login(auth, "e2e-admin")
        admin = bearer(admin_token)
        victim = await register(auth, email=unique_email("e2e-victim"))
        headers = bearer(victim["accessToken"])
        checks: list[tuple[httpx.AsyncClient, str]] = [
            (auth, "/api/auth/me"),
            (payments, "/api/payments"),
            (profile, "/api/profile"),
            (gateway, "/api/payments"),
            (gateway, "/api/auth/me"),
        ]
        for client, path in checks:
            r = await client.get(path, headers=headers)
            assert r.status_code == 200, (str(client.base_url), path, r.text)
        assert (await admin_direct.get("/api/admin/users", headers=headers)).status_code == 403

        r = await gateway.patch(
            f"/api/admin/users/{victim['user']['id']}/status",
            headers=admin,
            json={"isActive": False, "reason": "e2e"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["isActive"] is False
        # No waiting: the very next request on every service is refused.
        for client, path in [*checks, (admin_direct, "/api/admin/users")]:
            r = await client.get(path, headers=headers)
            assert r.status_code == 401, (str(client.base_url), path, r.text)
            assert _code(r) == "TOKEN_INVALID"
        r = await auth.post(
            "/api/auth/login", json={"email": victim["user"]["email"], "password": PASSWORD}
        )
        assert r.status_code == 401 and _code(r) == "INVALID_CREDENTIALS"
        r = await auth.post("/api/auth/refresh", json={"refreshToken": victim["refreshToken"]})
        assert r.status_code == 401


async def test_audit_trail_from_events_over_the_gateway(stack: Stack) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth,
        httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15) as gateway,
    ):
        admin_token, admin_id = await admin_login(auth, "e2e-admin")
        admin = bearer(admin_token)
        request_id = f"e2e-audit-{uuid.uuid4().hex[:8]}"
        user = await register(auth, email=unique_email("e2e-audit"), **{"X-Request-ID": request_id})
        user_id = user["user"]["id"]
        r = await gateway.put(
            f"/api/admin/users/{user_id}", headers=admin, json={"name": "Audited"}
        )
        assert r.status_code == 200, r.text

        async def trail() -> list[dict[str, Any]] | None:
            r = await gateway.get(
                "/api/admin/audit-logs",
                headers=admin,
                params={"resourceType": "user", "resourceId": user_id, "order": "asc"},
            )
            assert r.status_code == 200, r.text
            logs: list[dict[str, Any]] = r.json()["data"]["auditLogs"]
            return logs if len(logs) >= 2 else None

        logs = await poll(trail)
        assert [log["action"] for log in logs] == ["USER_REGISTERED", "USER_UPDATED"]
        registered, updated = logs
        assert registered["actorId"] == user_id and registered["correlationId"] == request_id
        assert updated["actor"]["id"] == admin_id
        assert updated["details"]["changes"]["name"]["new"] == "Audited"


async def test_audit_catches_up_after_admin_was_killed(stack: Stack) -> None:
    """The run's stack: its admin process is SIGKILLed, users register, it is started again."""
    async with httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth:
        admin_token, _ = await admin_login(auth, "e2e-admin")
        stack.services["admin"].kill()  # SIGKILL: no graceful shutdown
        try:
            created = await asyncio.gather(
                *(register(auth, email=unique_email("e2e-catchup")) for _ in range(6))
            )
        finally:
            stack.start("admin")
        ids = {user["user"]["id"] for user in created}
        async with httpx.AsyncClient(base_url=stack.url("admin"), timeout=15) as admin:

            async def rows_for_new_users() -> list[dict[str, Any]]:
                r = await admin.get(
                    "/api/admin/audit-logs",
                    headers=bearer(admin_token),
                    params={"action": "USER_REGISTERED", "limit": 100},
                )
                assert r.status_code == 200, r.text
                logs: list[dict[str, Any]] = r.json()["data"]["auditLogs"]
                return [log for log in logs if log["resourceId"] in ids]

            async def all_six() -> bool:
                return len(await rows_for_new_users()) >= 6

            await poll(all_six, timeout=30)
            rows = await rows_for_new_users()
            assert len(rows) == 6 and {row["resourceId"] for row in rows} == ids
            assert len({row["eventId"] for row in rows}) == 6


async def test_system_health_sees_every_running_service(stack: Stack) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth,
        httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15) as gateway,
    ):
        admin_token, _ = await admin_login(auth, "e2e-admin")
        r = await gateway.get("/api/admin/health", headers=bearer(admin_token))
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["services"] == {
            "database": "healthy",
            "redis": "healthy",
            "authService": "healthy",
            "paymentsService": "healthy",
            "adminService": "healthy",
            "profileService": "healthy",
        }
        assert data["status"] == "healthy"
        assert all(check["latencyMs"] >= 0 for check in data["checks"].values())
