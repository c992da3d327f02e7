"""JWT secret rotation over real processes (docs/operations.md §9): restart the services with a
new signing secret and the old one verify-only, and nobody is logged out; drop the old one and
its tokens stop working."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import httpx
import jwt

from tests.support.auth import PASSWORD, bearer, unique_email
from tests.support.servers import Stack

# All five: the gateway is ready only when every service is.
NAMES = ("auth", "payments", "admin", "profile", "gateway")


def _secret() -> str:
    return secrets.token_urlsafe(48)


async def test_rotating_both_secrets_keeps_sessions_alive(
    make_stack: Callable[..., Stack],
) -> None:
    old_access, old_refresh, new_access, new_refresh = (_secret() for _ in range(4))
    before = make_stack(("auth",), JWT_ACCESS_SECRET=old_access, JWT_REFRESH_SECRET=old_refresh)
    before.start()
    async with httpx.AsyncClient(base_url=before.url("auth"), timeout=15) as auth:
        body = {"email": unique_email("rotate"), "password": PASSWORD, "name": "Rotate"}
        registered = await auth.post("/api/auth/register", json=body)
    assert registered.status_code == 201, registered.text
    tokens = registered.json()["data"]
    before.stop()

    # Step 2 of the runbook: new secrets sign, the old ones still verify.
    during = make_stack(
        NAMES,
        JWT_ACCESS_SECRET=new_access,
        JWT_ACCESS_SECRET_PREVIOUS=old_access,
        JWT_REFRESH_SECRET=new_refresh,
        JWT_REFRESH_SECRET_PREVIOUS=old_refresh,
    )
    during.start()
    async with (
        httpx.AsyncClient(base_url=during.url("gateway"), timeout=15) as gateway,
        httpx.AsyncClient(base_url=during.url("auth"), timeout=15) as auth,
    ):
        # The access token signed before the rotation passes the gateway and the service.
        me = await gateway.get("/api/profile", headers=bearer(tokens["accessToken"]))
        assert me.status_code == 200, me.text
        # The old refresh token still rotates; the new pair is signed with the new secrets.
        refreshed = await auth.post(
            "/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        pair = refreshed.json()["data"]
    during.stop()
    for token, key in ((pair["accessToken"], new_access), (pair["refreshToken"], new_refresh)):
        claims = jwt.decode(token, key, algorithms=["HS256"], options={"verify_aud": False})
        assert claims["sub"] == tokens["user"]["id"]

    # Step 3: the old secrets removed; only tokens signed with the new ones pass.
    after = make_stack(NAMES, JWT_ACCESS_SECRET=new_access, JWT_REFRESH_SECRET=new_refresh)
    after.start()
    async with (
        httpx.AsyncClient(base_url=after.url("gateway"), timeout=15) as gateway,
        httpx.AsyncClient(base_url=after.url("auth"), timeout=15) as auth,
    ):
        old = await gateway.get("/api/profile", headers=bearer(tokens["accessToken"]))
        assert old.status_code == 401 and old.json()["error"]["code"] == "TOKEN_INVALID"
        new = await gateway.get("/api/profile", headers=bearer(pair["accessToken"]))
        assert new.status_code == 200, new.text
        again = await auth.post("/api/auth/refresh", json={"refreshToken": pair["refreshToken"]})
        assert again.status_code == 200, again.text
