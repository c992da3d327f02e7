"""Auth over real processes: logout seen at once by other services, role change through the
admin API visible in the next refreshed token, refresh races, lockout, the Redis-down drill.

Registration, login and refresh go to the auth service directly (the gateway's per-IP auth
rate limit of 10/min is shared by the whole e2e run); cross-service checks go through the
gateway and straight to the other services.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import jwt

from tests.support.auth import OTHER_PASSWORD, PASSWORD, admin_login, bearer, runtime, unique_email
from tests.support.servers import RedisServer, Stack


async def _register(auth: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    body = {"email": unique_email("e2e"), "password": PASSWORD, "name": "E2E", **extra}
    response = await auth.post("/api/auth/register", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_logout_is_refused_at_once_by_every_service(stack: Stack) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth,
        httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15) as gateway,
        httpx.AsyncClient(base_url=stack.url("profile"), timeout=15) as profile,
        httpx.AsyncClient(base_url=stack.url("payments"), timeout=15) as payments,
    ):
        data = await _register(auth)
        headers = bearer(data["accessToken"])
        assert (await profile.get("/api/profile", headers=headers)).status_code == 200
        assert (await payments.get("/api/payments", headers=headers)).status_code == 200
        assert (await gateway.get("/api/profile", headers=headers)).status_code == 200
        out = await gateway.post("/api/auth/logout", headers=headers)
        assert out.status_code == 200, out.text
        # No waiting: the very next request anywhere is refused.
        for client, path in (
            (profile, "/api/profile"),
            (payments, "/api/payments"),
            (gateway, "/api/profile"),
            (gateway, "/api/payments"),
            (auth, "/api/auth/me"),
        ):
            response = await client.get(path, headers=headers)
            assert response.status_code == 401, (path, response.text)
            assert _code(response) == "TOKEN_INVALID"


async def test_role_change_by_admin_shows_in_next_refresh(stack: Stack) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth,
        httpx.AsyncClient(base_url=stack.url("admin"), timeout=15) as admin,
        httpx.AsyncClient(base_url=stack.url("payments"), timeout=15) as payments,
    ):
        data = await _register(auth)
        admin_headers = bearer((await admin_login(auth, "e2e-admin"))[0])
        changed = await admin.patch(
            f"/api/admin/users/{data['user']['id']}/role",
            json={"role": "VENDOR"},
            headers=admin_headers,
        )
        assert changed.status_code == 200, changed.text
        old = await payments.get("/api/payments", headers=bearer(data["accessToken"]))
        assert old.status_code == 401 and _code(old) == "TOKEN_INVALID"
        refreshed = await auth.post(
            "/api/auth/refresh", json={"refreshToken": data["refreshToken"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        access = refreshed.json()["data"]["accessToken"]
        assert jwt.decode(access, options={"verify_signature": False})["role"] == "VENDOR"
        report = await payments.get("/api/payments/reports", headers=bearer(access))
        assert report.status_code == 200, report.text  # a VENDOR-only route
        # Deactivation: the live pair stops at once, refresh too.
        off = await admin.patch(
            f"/api/admin/users/{data['user']['id']}/status",
            json={"isActive": False},
            headers=admin_headers,
        )
        assert off.status_code == 200, off.text
        assert (await payments.get("/api/payments", headers=bearer(access))).status_code == 401
        again = await auth.post(
            "/api/auth/refresh", json={"refreshToken": refreshed.json()["data"]["refreshToken"]}
        )
        assert again.status_code == 401


async def test_concurrent_refresh_over_http_gives_one_pair(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth:
        data = await _register(auth)
        responses = await asyncio.gather(
            *(
                auth.post("/api/auth/refresh", json={"refreshToken": data["refreshToken"]})
                for _ in range(10)
            )
        )
        pairs = {
            (r.json()["data"]["accessToken"], r.json()["data"]["refreshToken"])
            for r in responses
            if r.status_code == 200
        }
        assert len(pairs) == 1, [r.text for r in responses]
        assert all(r.status_code in (200, 401) for r in responses)
        ((access, refresh),) = pairs
        assert (await auth.get("/api/auth/me", headers=bearer(access))).status_code == 200
        nxt = await auth.post("/api/auth/refresh", json={"refreshToken": refresh})
        assert nxt.status_code == 200


async def test_lockout_over_http(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth:
        data = await _register(auth)
        body = {"email": data["user"]["email"], "password": OTHER_PASSWORD}
        for _ in range(5):
            assert (await auth.post("/api/auth/login", json=body)).status_code == 401
        locked = await auth.post(
            "/api/auth/login", json={"email": data["user"]["email"], "password": PASSWORD}
        )
        assert locked.status_code == 423
        assert locked.json()["error"]["details"]["retryAfter"] > 0


async def test_redis_down_every_service_falls_back_to_the_database(
    stack: Stack, redis_server: RedisServer
) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth,
        httpx.AsyncClient(base_url=stack.url("profile"), timeout=15) as profile,
        httpx.AsyncClient(base_url=stack.url("payments"), timeout=15) as payments,
    ):
        alive = await _register(auth)
        gone = await _register(auth)
        assert (
            await auth.post("/api/auth/logout", headers=bearer(gone["accessToken"]))
        ).status_code == 200
        redis_server.stop()
        try:
            for client, path in ((profile, "/api/profile"), (payments, "/api/payments")):
                ok = await client.get(path, headers=bearer(alive["accessToken"]))
                assert ok.status_code == 200, (path, ok.text)
                refused = await client.get(path, headers=bearer(gone["accessToken"]))
                assert refused.status_code == 401, (path, refused.text)
            # Logging out while Redis is down still works and is enforced from the database.
            out = await auth.post("/api/auth/logout", headers=bearer(alive["accessToken"]))
            assert out.status_code == 200, out.text
            late = await profile.get("/api/profile", headers=bearer(alive["accessToken"]))
            assert late.status_code == 401
        finally:
            redis_server.start()
        # Redis came back empty: the auth service's sync worker re-publishes the revocation it
        # missed (every 2 s), and the token stays refused once Redis answers again.
        sid = jwt.decode(alive["accessToken"], options={"verify_signature": False})["sid"]
        async with runtime() as rt:
            deadline = asyncio.get_running_loop().time() + 20
            while await rt.redis.get(f"auth:revoked:sid:{sid}") != "1":
                assert asyncio.get_running_loop().time() < deadline, "sync did not re-publish"
                await asyncio.sleep(0.2)
        after = await profile.get("/api/profile", headers=bearer(alive["accessToken"]))
        assert after.status_code == 401, after.text
