"""Revocation by token version (api-contracts §1.5) with skewed host clocks, publication after
commit only, and the absolute session lifetime (`SESSION_MAX_AGE`), in-process against real
PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, update

from paysys.auth.models import AuthSession
from paysys.core.revocation import TOKEN_VERSION_KEY, db_revocation_fallback, is_revoked
from paysys.core.tokens import Principal, TokenCodec, now_ms
from paysys.gateway.ratelimit import Policy, RateLimiter
from paysys.users import accounts
from paysys.users.models import User
from tests.support.auth import (
    PASSWORD,
    bearer,
    login,
    register,
    runtime,
    unique_email,
    use_clock,
)

pytestmark = pytest.mark.usefixtures("clean_state")

NEW_PASSWORD = "Brand-New-Pass-7"


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


async def _checks(checker: httpx.AsyncClient, codec: TokenCodec, token: str) -> dict[str, bool]:
    """Whether each checker accepts `token`: a service (`CurrentUser`: Redis), the gateway's
    rate-limit script, `core.revocation.is_revoked` and the database fallback."""
    principal: Principal = codec.decode_access(token)
    async with runtime() as rt:
        limiter = RateLimiter(rt.redis, prefix=f"test:{uuid.uuid4().hex}:")
        edge = await limiter.hit("k", Policy("default", 1000, 60), principal)
        request: Any = SimpleNamespace(
            app=SimpleNamespace(state=SimpleNamespace(sessionmaker=rt.sessionmaker))
        )
        return {
            "service": (await checker.get("/api/auth/me", headers=bearer(token))).status_code
            == 200,
            "gateway": not edge.revoked,
            "redis": not await is_revoked(rt.redis, principal),
            "database": not await db_revocation_fallback(request, principal),
        }


ALL = {"service": True, "gateway": True, "redis": True, "database": True}
NONE = dict.fromkeys(ALL, False)


async def _change_role(user_id: str) -> None:
    """A role change as the admin service makes it (sessions kept, access tokens revoked)."""
    async with runtime() as rt, rt.sessionmaker() as session:
        admin = await accounts.create_user(
            session, email=unique_email(), password=PASSWORD, name="A", role="ADMIN", via="admin"
        )
        await session.commit()
        admin_id = admin.id
        await accounts.change_role(
            session, rt.redis, uuid.UUID(user_id), "VENDOR", actor_id=admin_id
        )
        await session.commit()
        await accounts.publish_revocations(session)


@pytest.mark.parametrize("event", ["password-change", "role-change"])
@pytest.mark.parametrize("skew_ms", [2000, -2000], ids=["auth-ahead", "auth-behind"])
async def test_a_token_issued_just_after_a_revocation_survives_skewed_clocks(
    app_client: Any, skew_ms: int, event: str
) -> None:
    """Two auth replicas whose clocks differ by 2 s (the skewed one changes the password):
    tokens issued just before the revocation (by either) are refused everywhere, tokens issued
    just after it (by either) are accepted everywhere. Comparing issue times with a "not before"
    instant fails this whichever way the clocks are skewed (tried on the former code: the role
    change fails in both directions, the password change with the auth host ahead)."""
    skewed = await app_client("auth")
    use_clock(skewed, lambda: now_ms() + skew_ms)
    checker = await app_client("auth")
    codec = TokenCodec(checker.app.state.settings)  # type: ignore[attr-defined]
    email = unique_email()
    user = await register(checker, email=email)
    before = [(await login(app, email)).json()["data"]["accessToken"] for app in (skewed, checker)]
    password = PASSWORD
    if event == "password-change":
        password = NEW_PASSWORD
        changed = await skewed.post(
            "/api/auth/password",
            json={"currentPassword": PASSWORD, "newPassword": password},
            headers=bearer(before[0]),
        )
        assert changed.status_code == 200, changed.text
    else:
        await _change_role(user["user"]["id"])
    after = [
        (await login(app, email, password)).json()["data"]["accessToken"]
        for app in (skewed, checker)
    ]
    assert [_claims(t)["ver"] for t in before + after] == [0, 0, 1, 1]
    # the skew is real: the skewed replica's tokens carry its own time
    assert (_claims(after[0])["iat"] - _claims(after[1])["iat"]) * 1000 in range(
        skew_ms - 1500, skew_ms + 1500
    )
    for token in before:
        assert await _checks(checker, codec, token) == NONE
    for token in after:
        assert await _checks(checker, codec, token) == ALL


async def test_every_revocation_bumps_the_version_and_only_after_commit(app_client: Any) -> None:
    client = await app_client("auth")
    data = await register(client)
    user_id = uuid.UUID(data["user"]["id"])
    key = TOKEN_VERSION_KEY.format(user_id)
    async with runtime() as rt, rt.sessionmaker() as session:
        admin = await accounts.create_user(
            session,
            email=unique_email(),
            password=PASSWORD,
            name="A",
            role="ADMIN",
            via="admin",
        )
        await session.commit()
        admin_id = admin.id
        # A rolled-back bump never reaches Redis (it would refuse the next tokens).
        await accounts.change_role(session, rt.redis, user_id, "VENDOR", actor_id=admin_id)
        await session.rollback()
        await accounts.publish_revocations(session)
        assert await rt.redis.get(key) is None
        # A savepoint is not the commit: nothing is published before the transaction ends.
        await accounts.change_role(session, rt.redis, user_id, "VENDOR", actor_id=admin_id)
        async with session.begin_nested():
            await session.execute(select(1))
        await accounts.publish_revocations(session)
        assert await rt.redis.get(key) is None
        await session.commit()
        await accounts.publish_revocations(session)
        assert await rt.redis.get(key) == "1"
        # Role change (sessions kept), deactivation, deletion: one bump each.
        await accounts.set_active(session, rt.redis, user_id, False, actor_id=admin_id)
        await accounts.set_active(session, rt.redis, user_id, True, actor_id=admin_id)
        await session.commit()
        await accounts.publish_revocations(session)
        assert await rt.redis.get(key) == "2"
    # Logout of all sessions bumps it too; a new login carries the new version.
    fresh = (await login(client, data["user"]["email"])).json()["data"]
    assert _claims(fresh["accessToken"])["ver"] == 2
    out = await client.post(
        "/api/auth/logout", json={"allSessions": True}, headers=bearer(fresh["accessToken"])
    )
    assert out.status_code == 200
    async with runtime() as rt:
        assert await rt.redis.get(key) == "3"
        async with rt.sessionmaker() as session:
            assert await session.scalar(select(User.token_version).where(User.id == user_id)) == 3
    newest = (await login(client, data["user"]["email"])).json()["data"]["accessToken"]
    assert _claims(newest)["ver"] == 3
    assert (await client.get("/api/auth/me", headers=bearer(newest))).status_code == 200


async def test_role_change_keeps_sessions_and_the_next_refresh_carries_the_new_version(
    app_client: Any,
) -> None:
    client = await app_client("auth")
    data = await register(client)
    async with runtime() as rt, rt.sessionmaker() as session:
        admin = await accounts.create_user(
            session, email=unique_email(), password=PASSWORD, name="A", role="ADMIN", via="admin"
        )
        await session.commit()
        await accounts.change_role(
            session, rt.redis, uuid.UUID(data["user"]["id"]), "VENDOR", actor_id=admin.id
        )
        await session.commit()
        await accounts.publish_revocations(session)
    assert (
        await client.get("/api/auth/me", headers=bearer(data["accessToken"]))
    ).status_code == 401
    pair = await client.post("/api/auth/refresh", json={"refreshToken": data["refreshToken"]})
    assert pair.status_code == 200, pair.text
    claims = _claims(pair.json()["data"]["accessToken"])
    assert (claims["role"], claims["ver"]) == ("VENDOR", 1)


# --- absolute session lifetime -----------------------------------------------------------


async def _age_session(sid: str, by: timedelta) -> None:
    async with runtime() as rt, rt.sessionmaker() as session:
        await session.execute(
            update(AuthSession)
            .where(AuthSession.id == uuid.UUID(sid))
            .values(created_at=AuthSession.created_at - by)
        )
        await session.commit()


async def test_no_refresh_after_session_max_age_however_often_refreshed(app_client: Any) -> None:
    client = await app_client("auth")
    data = await register(client)
    sid = _claims(data["refreshToken"])["fam"]
    refresh_token = data["refreshToken"]
    for _ in range(3):  # refreshing slides the refresh token, never the session's end
        response = await client.post("/api/auth/refresh", json={"refreshToken": refresh_token})
        assert response.status_code == 200
        refresh_token = response.json()["data"]["refreshToken"]
    # 30 days minus a minute old: still fine, but the new refresh token ends with the session
    await _age_session(sid, timedelta(days=30) - timedelta(minutes=1))
    response = await client.post("/api/auth/refresh", json={"refreshToken": refresh_token})
    assert response.status_code == 200
    pair = response.json()["data"]
    lifetime = _claims(pair["refreshToken"])["exp"] - _claims(pair["refreshToken"])["iat"]
    assert 50 <= lifetime <= 61
    # past the end: 401 TOKEN_EXPIRED, and the session is no longer listed
    await _age_session(sid, timedelta(minutes=1))
    expired = await client.post("/api/auth/refresh", json={"refreshToken": pair["refreshToken"]})
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "TOKEN_EXPIRED"
    listed = await client.get("/api/auth/sessions", headers=bearer(pair["accessToken"]))
    assert listed.status_code == 200 and listed.json()["data"]["sessions"] == []


async def test_a_tiny_session_max_age(app_client: Any) -> None:
    import asyncio

    client = await app_client("auth", session_max_age="2s")
    data = await register(client)
    assert _claims(data["refreshToken"])["exp"] - _claims(data["refreshToken"])["iat"] == 2
    first = await client.post("/api/auth/refresh", json={"refreshToken": data["refreshToken"]})
    assert first.status_code == 200
    await asyncio.sleep(2.1)
    late = await client.post(
        "/api/auth/refresh", json={"refreshToken": first.json()["data"]["refreshToken"]}
    )
    assert late.status_code == 401 and late.json()["error"]["code"] == "TOKEN_EXPIRED"
