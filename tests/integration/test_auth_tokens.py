"""Tokens end to end in-process: refresh rotation, grace, reuse, races, instant revocation
(role change, deactivation, deletion), forged tokens, and the Redis-down fallback."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, update

from paysys.auth.models import AuthSession, RevokedAccessToken
from paysys.auth.seed import SEED_PASSWORD, seed
from paysys.auth.workers import revocation_sync, sync_once
from paysys.core.config import Settings
from paysys.core.revocation import REVOKED_JTI_KEY, REVOKED_SID_KEY, TOKEN_VERSION_KEY
from paysys.core.tokens import TokenCodec
from paysys.users import accounts
from paysys.users.models import User
from tests.support.auth import PASSWORD, bearer, login, register, runtime, unique_email

pytestmark = pytest.mark.usefixtures("clean_state")


async def _client(app_client: Any) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await app_client("auth")
    return client


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/auth/refresh", json={"refreshToken": token})


async def _me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/api/auth/me", headers=bearer(token))


async def _admin_id() -> uuid.UUID:
    async with runtime() as rt, rt.sessionmaker() as session:
        admin = await accounts.create_user(
            session,
            email=unique_email("admin"),
            password=PASSWORD,
            name="A",
            role="ADMIN",
            via="admin",
        )
        await session.commit()
        return admin.id


async def test_refresh_rotates_within_the_family(app_client: Any) -> None:
    client = await _client(app_client)
    data = await register(client)
    response = await _refresh(client, data["refreshToken"])
    assert response.status_code == 200
    pair = response.json()["data"]
    assert set(pair) == {"accessToken", "refreshToken", "expiresIn"}
    assert pair["refreshToken"] != data["refreshToken"]
    old = jwt.decode(data["refreshToken"], options={"verify_signature": False})
    new = jwt.decode(pair["refreshToken"], options={"verify_signature": False})
    assert new["fam"] == old["fam"] and new["jti"] != old["jti"]
    access = jwt.decode(pair["accessToken"], options={"verify_signature": False})
    assert access["sid"] == new["fam"] and access["userId"] == access["sub"]
    assert (await _me(client, pair["accessToken"])).status_code == 200
    # Only hashes are stored.
    async with runtime() as rt, rt.sessionmaker() as session:
        row = await session.get(AuthSession, uuid.UUID(new["fam"]))
        assert row is not None
        assert pair["refreshToken"] not in (row.refresh_hash, row.previous_hash)
        assert len(row.refresh_hash) == 64
    # The next rotation works from the new token.
    assert (await _refresh(client, pair["refreshToken"])).status_code == 200


async def test_retry_within_grace_gets_the_same_pair(app_client: Any) -> None:
    client = await _client(app_client)
    data = await register(client)
    first = await _refresh(client, data["refreshToken"])
    retry = await _refresh(client, data["refreshToken"])
    assert first.status_code == retry.status_code == 200
    assert first.json()["data"] == retry.json()["data"]
    assert (await _refresh(client, first.json()["data"]["refreshToken"])).status_code == 200


async def test_reuse_after_grace_revokes_the_family(app_client: Any) -> None:
    client = await _client(app_client)
    data = await register(client)
    pair = (await _refresh(client, data["refreshToken"])).json()["data"]
    fam = uuid.UUID(jwt.decode(pair["refreshToken"], options={"verify_signature": False})["fam"])
    async with runtime() as rt, rt.sessionmaker() as session:
        await session.execute(
            update(AuthSession)
            .where(AuthSession.id == fam)
            .values(rotated_at_ms=AuthSession.rotated_at_ms - 11_000)
        )
        await session.commit()
    reused = await _refresh(client, data["refreshToken"])
    assert reused.status_code == 401 and _code(reused) == "TOKEN_REUSED"
    # The whole family is dead: the newest refresh token and its access token too.
    latest = await _refresh(client, pair["refreshToken"])
    assert latest.status_code == 401 and _code(latest) == "TOKEN_INVALID"
    assert (await _me(client, pair["accessToken"])).status_code == 401


async def test_older_token_of_the_family_is_reuse_even_within_grace(app_client: Any) -> None:
    client = await _client(app_client)
    data = await register(client)
    second = (await _refresh(client, data["refreshToken"])).json()["data"]
    third = (await _refresh(client, second["refreshToken"])).json()["data"]
    reused = await _refresh(client, data["refreshToken"])
    assert reused.status_code == 401 and _code(reused) == "TOKEN_REUSED"
    assert (await _refresh(client, third["refreshToken"])).status_code == 401


async def test_concurrent_refresh_with_one_token_yields_one_pair(app_client: Any) -> None:
    client = await _client(app_client)
    data = await register(client)
    responses = await asyncio.gather(*(_refresh(client, data["refreshToken"]) for _ in range(8)))
    ok = [r.json()["data"] for r in responses if r.status_code == 200]
    rejected = [r for r in responses if r.status_code != 200]
    assert ok, [r.text for r in responses]
    assert all(item == ok[0] for item in ok)  # exactly one new pair, served to every retry
    assert all(r.status_code == 401 for r in rejected)
    fam = uuid.UUID(jwt.decode(ok[0]["refreshToken"], options={"verify_signature": False})["fam"])
    async with runtime() as rt, rt.sessionmaker() as session:
        row = await session.get(AuthSession, fam)
        assert row is not None and not row.revoked
    assert (await _refresh(client, ok[0]["refreshToken"])).status_code == 200


async def test_role_change_revokes_access_and_shows_in_next_refresh(app_client: Any) -> None:
    client = await _client(app_client)
    data = await register(client)
    admin_id = await _admin_id()
    async with runtime() as rt, rt.sessionmaker() as session:
        await accounts.change_role(
            session, rt.redis, uuid.UUID(data["user"]["id"]), "VENDOR", actor_id=admin_id
        )
        await session.commit()
        await accounts.publish_revocations(session)
    stale = await _me(client, data["accessToken"])
    assert stale.status_code == 401 and _code(stale) == "TOKEN_INVALID"
    pair = (await _refresh(client, data["refreshToken"])).json()["data"]
    claims = jwt.decode(pair["accessToken"], options={"verify_signature": False})
    assert claims["role"] == "VENDOR"
    me = await _me(client, pair["accessToken"])
    assert me.status_code == 200 and me.json()["data"]["role"] == "VENDOR"


async def test_deactivation_and_deletion_stop_tokens_at_once(app_client: Any) -> None:
    client = await _client(app_client)
    one, two = await register(client), await register(client)
    admin_id = await _admin_id()
    async with runtime() as rt, rt.sessionmaker() as session:
        await accounts.set_active(
            session, rt.redis, uuid.UUID(one["user"]["id"]), False, actor_id=admin_id
        )
        await accounts.delete_user(
            session, rt.redis, uuid.UUID(two["user"]["id"]), actor_id=admin_id
        )
        await session.commit()
        await accounts.publish_revocations(session)
    for data in (one, two):
        assert _code(await _me(client, data["accessToken"])) == "TOKEN_INVALID"
        refreshed = await _refresh(client, data["refreshToken"])
        assert refreshed.status_code == 401 and _code(refreshed) == "TOKEN_INVALID"
    assert (await login(client, one["user"]["email"])).status_code == 401
    # The deleted user's email is free again.
    again = await register(client, email=two["user"]["email"])
    assert again["user"]["id"] != two["user"]["id"]


def _forge(settings: Settings, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(uuid.uuid4()),
        "type": "access",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "ver": 0,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        "email": "x@example.com",
        "name": "X",
        "role": "ADMIN",
        "sid": str(uuid.uuid4()),
    }
    claims.update(over)
    return claims


@pytest.mark.filterwarnings("ignore:The HMAC key")
async def test_forged_tokens_over_http(app_client: Any, settings: Settings) -> None:
    client = await _client(app_client)
    data = await register(client)
    real = jwt.decode(data["accessToken"], options={"verify_signature": False})
    secret = settings.jwt_access_secret
    now = int(time.time())
    cases = {
        "alg none": (jwt.encode(real, None, algorithm="none"), "TOKEN_INVALID"),
        "wrong secret": (jwt.encode(real, "w" * 48, algorithm="HS256"), "TOKEN_INVALID"),
        "HS512": (jwt.encode(real, secret, algorithm="HS512"), "TOKEN_INVALID"),
        "refresh as access": (data["refreshToken"], "TOKEN_INVALID"),
        "expired": (
            jwt.encode({**real, "iat": now - 1000, "exp": now - 10}, secret, algorithm="HS256"),
            "TOKEN_EXPIRED",
        ),
        "wrong audience": (
            jwt.encode({**real, "aud": "someone-else"}, secret, algorithm="HS256"),
            "TOKEN_INVALID",
        ),
        "wrong issuer": (
            jwt.encode({**real, "iss": "someone-else"}, secret, algorithm="HS256"),
            "TOKEN_INVALID",
        ),
        "refresh secret": (
            jwt.encode(real, settings.jwt_refresh_secret, algorithm="HS256"),
            "TOKEN_INVALID",
        ),
        "tampered payload": (
            data["accessToken"].split(".")[0]
            + "."
            + jwt.encode({**real, "role": "ADMIN"}, "z" * 48).split(".")[1]
            + "."
            + data["accessToken"].split(".")[2],
            "TOKEN_INVALID",
        ),
    }
    for name, (token, code) in cases.items():
        response = await _me(client, token)
        assert response.status_code == 401, name
        assert _code(response) == code, name
    # An access token is not a refresh token either.
    as_refresh = await _refresh(client, data["accessToken"])
    assert as_refresh.status_code == 401 and _code(as_refresh) == "TOKEN_INVALID"
    expired_refresh = jwt.encode(
        {**jwt.decode(data["refreshToken"], options={"verify_signature": False}), "exp": now - 10},
        settings.jwt_refresh_secret,
        algorithm="HS256",
    )
    assert _code(await _refresh(client, expired_refresh)) == "TOKEN_EXPIRED"
    unknown_family = jwt.encode(
        {
            **jwt.decode(data["refreshToken"], options={"verify_signature": False}),
            "fam": str(uuid.uuid4()),
        },
        settings.jwt_refresh_secret,
        algorithm="HS256",
    )
    assert _code(await _refresh(client, unknown_family)) == "TOKEN_INVALID"
    # A well-signed token for a user that does not exist: /me has no user to show.
    ghost = jwt.encode(_forge(settings, role="CUSTOMER"), secret, algorithm="HS256")
    ghost_me = await _me(client, ghost)
    assert ghost_me.status_code == 404 and _code(ghost_me) == "USER_NOT_FOUND"


async def test_redis_down_uses_the_database(app_client: Any, redis_server: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    alive = await register(client, email=email)
    logged_out = (await login(client, email)).json()["data"]
    assert (
        await client.post("/api/auth/logout", headers=bearer(logged_out["accessToken"]))
    ).status_code == 200
    # A logout that ends ANOTHER session: the presented token's own session lives on, so only
    # the token's own record can refuse it while Redis is down.
    first = (await login(client, email)).json()["data"]
    second = (await login(client, email)).json()["data"]
    ended_other = await client.post(
        "/api/auth/logout",
        json={"refreshToken": second["refreshToken"]},
        headers=bearer(first["accessToken"]),
    )
    assert ended_other.status_code == 200
    admin_id = await _admin_id()
    demoted = await register(client)
    redis_server.stop()
    try:
        # Valid token: still accepted (decided from the database).
        assert (await _me(client, alive["accessToken"])).status_code == 200
        # A signed token naming no stored session (minted by a tool) is judged by its user.
        minted, _ = TokenCodec(Settings()).issue_access(
            user_id=uuid.UUID(alive["user"]["id"]),
            email=email,
            name="T",
            role="CUSTOMER",
            sid=str(uuid.uuid4()),
        )
        assert (await _me(client, minted)).status_code == 200
        # Logged out before the outage: still refused.
        assert (await _me(client, logged_out["accessToken"])).status_code == 401
        assert (await _me(client, first["accessToken"])).status_code == 401  # session alive
        assert (await _me(client, second["accessToken"])).status_code == 401  # session ended
        # Revoked during the outage (Redis cannot be written): refused anyway.
        async with runtime() as rt, rt.sessionmaker() as session:
            await accounts.change_role(
                session, rt.redis, uuid.UUID(demoted["user"]["id"]), "VENDOR", actor_id=admin_id
            )
            await session.commit()
        assert (await _me(client, demoted["accessToken"])).status_code == 401
        # Logins still work (lockout and sessions live in PostgreSQL).
        assert (await login(client, email)).status_code == 200
    finally:
        redis_server.start()
    # Redis is back but never heard of that revocation: the sync worker tells it.
    async with runtime() as rt:
        watermark = await sync_once(rt, None)
        await rt.redis.flushdb()  # Redis restarted empty (marks are not persisted)
        assert await rt.redis.get(TOKEN_VERSION_KEY.format(demoted["user"]["id"])) is None
        await sync_once(rt, watermark)  # notices the loss and re-publishes everything
        assert await rt.redis.get(TOKEN_VERSION_KEY.format(demoted["user"]["id"])) == "1"
        sid = jwt.decode(logged_out["accessToken"], options={"verify_signature": False})["sid"]
        assert await rt.redis.get(REVOKED_SID_KEY.format(sid)) == "1"
        jti = jwt.decode(first["accessToken"], options={"verify_signature": False})["jti"]
        assert await rt.redis.get(REVOKED_JTI_KEY.format(jti)) == "1"
    client2 = await _client(app_client)  # fresh Redis connections
    assert (await _me(client2, demoted["accessToken"])).status_code == 401
    assert (await _me(client2, logged_out["accessToken"])).status_code == 401
    assert (await _me(client2, first["accessToken"])).status_code == 401
    assert (await _me(client2, alive["accessToken"])).status_code == 200


async def test_revoked_token_rows_are_kept_until_the_token_expires(app_client: Any) -> None:
    client = await _client(app_client)
    user_id = uuid.UUID((await register(client))["user"]["id"])
    expired, alive = f"expired-{uuid.uuid4()}", f"alive-{uuid.uuid4()}"
    async with runtime() as rt:
        async with rt.sessionmaker() as session:
            now = datetime.now(UTC)
            session.add_all(
                [
                    RevokedAccessToken(
                        jti=expired, user_id=user_id, expires_at=now - timedelta(minutes=1)
                    ),
                    RevokedAccessToken(
                        jti=alive, user_id=user_id, expires_at=now + timedelta(minutes=5)
                    ),
                ]
            )
            await session.commit()
        await sync_once(rt, None)
        async with rt.sessionmaker() as session:
            kept = (
                await session.scalars(
                    select(RevokedAccessToken.jti).where(
                        RevokedAccessToken.jti.in_([expired, alive])
                    )
                )
            ).all()
        assert kept == [alive]
        # the live one is (re)published for the hot path, with its remaining lifetime
        ttl = await rt.redis.ttl(REVOKED_JTI_KEY.format(alive))
        assert 240 < ttl <= 301
        assert await rt.redis.exists(REVOKED_JTI_KEY.format(expired)) == 0


async def test_revocation_sync_worker_loop_runs_and_stops() -> None:
    async with runtime() as rt:
        task = asyncio.create_task(revocation_sync(rt))
        await asyncio.sleep(0.2)
        rt.stopping.set()
        await asyncio.wait_for(task, 5)


async def test_seed_is_idempotent(app_client: Any) -> None:
    async with runtime() as rt:
        for _ in range(2):
            async with rt.sessionmaker() as session:
                await seed(session)
        async with rt.sessionmaker() as session:
            rows = (await session.execute(select(User.email, User.role).order_by(User.email))).all()
    assert rows == [
        ("admin@example.com", "ADMIN"),
        ("customer@example.com", "CUSTOMER"),
        ("vendor@example.com", "VENDOR"),
    ]
    client = await _client(app_client)
    response = await login(client, "Admin@Example.com", SEED_PASSWORD)
    assert response.status_code == 200 and response.json()["data"]["user"]["role"] == "ADMIN"
