"""/api/auth in-process against real PostgreSQL and Redis: register, login, lockout, me,
password, sessions, logout and their events (api-contracts §3)."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import argon2
import httpx
import jwt
import pytest
from sqlalchemy import select, update

from paysys.auth.models import AuthSession, LoginThrottle
from paysys.core.events.models import OutboxEvent
from paysys.users import accounts
from paysys.users.models import User
from tests.support.auth import (
    OTHER_PASSWORD,
    PASSWORD,
    bearer,
    login,
    register,
    runtime,
    unique_email,
)

pytestmark = pytest.mark.usefixtures("clean_state")

USER_FIELDS = {"id", "email", "name", "role", "isActive", "emailVerified", "createdAt", "updatedAt"}


async def _client(app_client: Any) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await app_client("auth")
    return client


async def _events(type_: str) -> list[dict[str, Any]]:
    async with runtime() as rt, rt.sessionmaker() as session:
        rows = await session.execute(
            select(OutboxEvent.payload).where(OutboxEvent.type == type_).order_by(OutboxEvent.seq)
        )
        return [r[0] for r in rows]


def _error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    return dict(body["error"])


# --- register ----------------------------------------------------------------------------


async def test_register_returns_user_and_tokens(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    response = await client.post(
        "/api/auth/register",
        json={"email": f"  {email.upper()} ", "password": PASSWORD, "name": " Ann "},
    )
    assert response.status_code == 201
    data = response.json()["data"]
    assert set(data) == {"user", "accessToken", "refreshToken", "expiresIn"}
    assert set(data["user"]) == USER_FIELDS
    assert data["user"]["email"] == email and data["user"]["name"] == "Ann"
    assert data["user"]["role"] == "CUSTOMER" and data["user"]["isActive"] is True
    assert data["user"]["createdAt"].endswith("Z")
    assert data["expiresIn"] == 900
    me = await client.get("/api/auth/me", headers=bearer(data["accessToken"]))
    assert me.status_code == 200 and me.json()["data"] == data["user"]
    (event,) = await _events("user.created")
    assert event["data"] == {"user": data["user"], "via": "register"}
    assert event["actorId"] == data["user"]["id"]
    assert "password" not in str(event["data"]).lower()


async def test_register_roles(app_client: Any) -> None:
    client = await _client(app_client)
    vendor = await register(client, role="VENDOR")
    assert vendor["user"]["role"] == "VENDOR"
    admin = await client.post(
        "/api/auth/register",
        json={"email": unique_email(), "password": PASSWORD, "name": "X", "role": "ADMIN"},
    )
    assert admin.status_code == 403 and _error(admin)["code"] == "FORBIDDEN"
    bogus = await client.post(
        "/api/auth/register",
        json={"email": unique_email(), "password": PASSWORD, "name": "X", "role": "ROOT"},
    )
    assert bogus.status_code == 400 and _error(bogus)["code"] == "VALIDATION_ERROR"
    async with runtime() as rt, rt.sessionmaker() as session:
        assert (await session.scalar(select(User).where(User.role == "ADMIN"))) is None


async def test_register_duplicate_email_case_insensitive(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    await register(client, email=email)
    again = await client.post(
        "/api/auth/register",
        json={"email": email.upper(), "password": PASSWORD, "name": "Other"},
    )
    assert again.status_code == 409 and _error(again)["code"] == "EMAIL_EXISTS"


async def test_register_password_policy_details(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    cases = {
        "short1!A": ["must be at least 12 characters"],
        "alllowercase-1": ["must contain at least one upper-case letter"],
        "ALLUPPERCASE-1": ["must contain at least one lower-case letter"],
        "NoDigitsHere-!": ["must contain at least one digit"],
        "NoSymbols12345": ["must contain at least one character that is not a letter or digit"],
        "Aa1!" + "x" * 130: ["must be at most 128 characters"],
        email.upper(): ["must not be the email address"],
        "": [
            "must be at least 12 characters",
            "must contain at least one upper-case letter",
            "must contain at least one lower-case letter",
            "must contain at least one digit",
            "must contain at least one character that is not a letter or digit",
        ],
        "abc": [
            "must be at least 12 characters",
            "must contain at least one upper-case letter",
            "must contain at least one digit",
            "must contain at least one character that is not a letter or digit",
        ],
    }
    for password, expected in cases.items():
        if password == email.upper():
            # The email itself with the missing classes satisfied: only that rule fails.
            password = email[:1].upper() + email[1:] + "1"
            body_email = password
        else:
            body_email = email
        response = await client.post(
            "/api/auth/register", json={"email": body_email, "password": password, "name": "N"}
        )
        assert response.status_code == 400, (password, response.text)
        error = _error(response)
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"] == [{"field": "password", "message": m} for m in expected]
        assert error["message"] == f"password: {expected[0]}"


async def test_register_body_validation(app_client: Any) -> None:
    client = await _client(app_client)
    unknown = await client.post(
        "/api/auth/register",
        json={"email": unique_email(), "password": PASSWORD, "name": "N", "isAdmin": True},
    )
    assert unknown.status_code == 400
    assert _error(unknown)["details"] == [{"field": "isAdmin", "message": "unknown field"}]
    bad_email = await client.post(
        "/api/auth/register", json={"email": "not-an-email", "password": PASSWORD, "name": "N"}
    )
    assert bad_email.status_code == 400 and _error(bad_email)["details"][0]["field"] == "email"
    missing = await client.post("/api/auth/register", json={"email": unique_email()})
    assert missing.status_code == 400
    assert {d["field"] for d in _error(missing)["details"]} == {"password", "name"}
    too_long = await client.post(
        "/api/auth/register",
        json={"email": unique_email(), "password": PASSWORD, "name": "n" * 101},
    )
    assert too_long.status_code == 400
    not_json = await client.post(
        "/api/auth/register", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400 and _error(not_json)["code"] == "INVALID_JSON"
    for path, body in (
        ("/api/auth/login", {"email": unique_email(), "password": "x", "remember": True}),
        ("/api/auth/refresh", {"refreshToken": "x", "extra": 1}),
    ):
        response = await client.post(path, json=body)
        assert response.status_code == 400 and _error(response)["code"] == "VALIDATION_ERROR"


# --- login -------------------------------------------------------------------------------


async def test_login_success_creates_session_and_event(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    registered = await register(client, email=email)
    response = await login(client, email.upper(), **{"User-Agent": "pytest-ua/1"})
    assert response.status_code == 200
    data = response.json()["data"]
    assert set(data) == {"user", "accessToken", "refreshToken", "expiresIn"}
    assert (
        data["user"]
        == (await client.get("/api/auth/me", headers=bearer(data["accessToken"]))).json()["data"]
    )
    sessions = (await client.get("/api/auth/sessions", headers=bearer(data["accessToken"]))).json()[
        "data"
    ]["sessions"]
    assert len(sessions) == 2  # register + login
    current = [s for s in sessions if s["current"]]
    assert len(current) == 1 and current[0]["userAgent"] == "pytest-ua/1"
    assert current[0]["ip"] == "127.0.0.1"
    (event,) = await _events("user.logged_in")
    assert event["data"] == {
        "userId": registered["user"]["id"],
        "ip": "127.0.0.1",
        "userAgent": "pytest-ua/1",
    }


async def test_login_failures_answer_alike(app_client: Any) -> None:
    client = await _client(app_client)
    email, inactive = unique_email(), unique_email()
    await register(client, email=email)
    off = await register(client, email=inactive)
    async with runtime() as rt, rt.sessionmaker() as session:
        admin = await accounts.create_user(
            session, email=unique_email(), password=PASSWORD, name="A", role="ADMIN", via="admin"
        )
        await accounts.set_active(session, rt.redis, off["user"]["id"], False, actor_id=admin.id)
        await session.commit()
    answers = [
        await login(client, unique_email()),  # unknown email
        await login(client, email, OTHER_PASSWORD),  # wrong password
        await login(client, inactive),  # deactivated, right password
    ]
    bodies = []
    for response in answers:
        assert response.status_code == 401
        error = _error(response)
        error.pop("requestId")
        bodies.append((error, sorted(k for k in response.headers if k != "x-request-id")))
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0][0] == {"code": "INVALID_CREDENTIALS", "message": "Invalid email or password"}
    reasons = [e["data"]["reason"] for e in await _events("user.login_failed")]
    assert reasons == ["unknown_email", "wrong_password", "inactive"]


async def test_login_timing_is_alike_for_unknown_and_known_email(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    await register(client, email=email)

    async def timed(address: str) -> float:
        started = time.perf_counter()
        response = await login(client, address, OTHER_PASSWORD)
        assert response.status_code == 401
        return time.perf_counter() - started

    known, unknown = [], []
    for _ in range(4):  # 4 failures: stays below the lockout threshold
        known.append(await timed(email))
        unknown.append(await timed(unique_email()))
    ratio = statistics.median(known) / statistics.median(unknown)
    # Both verify one argon2id hash (~20 ms); without the dummy hash the ratio would be ~10+.
    assert 0.5 < ratio < 2.0, (known, unknown)


async def test_lockout_after_five_failures(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    await register(client, email=email)
    for _ in range(5):
        assert (await login(client, email, OTHER_PASSWORD)).status_code == 401
    locked = await login(client, email)  # even the right password
    assert locked.status_code == 423
    error = _error(locked)
    assert error["code"] == "ACCOUNT_LOCKED"
    assert 55 <= error["details"]["retryAfter"] <= 60
    assert locked.headers["retry-after"] == str(error["details"]["retryAfter"])
    # Unknown emails lock the same way (no account enumeration through 423).
    ghost = unique_email()
    for _ in range(5):
        assert (await login(client, ghost)).status_code == 401
    assert (await login(client, ghost)).status_code == 423
    # The lock expires by itself; the right password then works and resets the count.
    async with runtime() as rt, rt.sessionmaker() as session:
        await session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.email == email)
            .values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    assert (await login(client, email)).status_code == 200
    async with runtime() as rt, rt.sessionmaker() as session:
        assert await session.get(LoginThrottle, email) is None
    for _ in range(4):
        assert (await login(client, email, OTHER_PASSWORD)).status_code == 401
    assert (await login(client, email)).status_code == 200


async def test_lockout_second_lock_doubles(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    await register(client, email=email)
    for _ in range(5):
        await login(client, email, OTHER_PASSWORD)
    async with runtime() as rt, rt.sessionmaker() as session:
        await session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.email == email)
            .values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    for _ in range(5):
        assert (await login(client, email, OTHER_PASSWORD)).status_code == 401
    locked = await login(client, email, OTHER_PASSWORD)
    assert locked.status_code == 423
    assert 115 <= _error(locked)["details"]["retryAfter"] <= 120


async def test_parallel_wrong_guesses_cannot_outrun_the_lock(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    await register(client, email=email)
    responses = await asyncio.gather(
        *(login(client, email, f"Wrong-guess-{i:04d}") for i in range(12))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [401] * 5 + [423] * 7
    async with runtime() as rt, rt.sessionmaker() as session:
        row = await session.get(LoginThrottle, email)
        assert row is not None and row.hour_failures == 5


async def test_login_upgrades_an_old_hash(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    data = await register(client, email=email)
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024).hash(PASSWORD)
    async with runtime() as rt, rt.sessionmaker() as session:
        await session.execute(update(User).where(User.email == email).values(password_hash=weak))
        await session.commit()
    assert (await login(client, email)).status_code == 200
    async with runtime() as rt, rt.sessionmaker() as session:
        stored = await session.scalar(select(User.password_hash).where(User.email == email))
    assert stored != weak and stored is not None
    params = argon2.extract_parameters(stored)
    assert params.memory_cost == 19 * 1024 and params.time_cost == 2
    assert data["user"]["email"] == email
    assert (await login(client, email)).status_code == 200


# --- me, password ------------------------------------------------------------------------


async def test_me_requires_bearer(app_client: Any) -> None:
    client = await _client(app_client)
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        response = await client.get("/api/auth/me", headers=headers)
        assert response.status_code == 401 and _error(response)["code"] == "UNAUTHORIZED"
    garbage = await client.get("/api/auth/me", headers=bearer("not.a.jwt"))
    assert garbage.status_code == 401 and _error(garbage)["code"] == "TOKEN_INVALID"


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_password_change(app_client: Any, method: str) -> None:
    client = await _client(app_client)
    email = unique_email()
    data = await register(client, email=email)
    other = (await login(client, email)).json()["data"]
    headers = bearer(data["accessToken"])
    wrong = await client.request(
        method,
        "/api/auth/password",
        json={"currentPassword": OTHER_PASSWORD, "newPassword": "Brand-New-Pass-7"},
        headers=headers,
    )
    assert wrong.status_code == 401 and _error(wrong)["code"] == "INVALID_CREDENTIALS"
    same = await client.request(
        method,
        "/api/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": PASSWORD},
        headers=headers,
    )
    assert same.status_code == 400
    assert _error(same)["details"][0]["field"] == "newPassword"
    weak = await client.request(
        method,
        "/api/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": "weakpassword"},
        headers=headers,
    )
    assert weak.status_code == 400
    assert [d["field"] for d in _error(weak)["details"]] == ["newPassword"] * 3
    unknown = await client.request(
        method,
        "/api/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": "Brand-New-Pass-7", "x": 1},
        headers=headers,
    )
    assert unknown.status_code == 400
    changed = await client.request(
        method,
        "/api/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": "Brand-New-Pass-7"},
        headers=headers,
    )
    assert changed.status_code == 200 and "message" in changed.json()["data"]
    # Every token issued before is dead, on every device; refresh families too.
    for token in (data["accessToken"], other["accessToken"]):
        response = await client.get("/api/auth/me", headers=bearer(token))
        assert response.status_code == 401 and _error(response)["code"] == "TOKEN_INVALID"
    for token in (data["refreshToken"], other["refreshToken"]):
        response = await client.post("/api/auth/refresh", json={"refreshToken": token})
        assert response.status_code == 401
    assert (await login(client, email)).status_code == 401
    fresh = await login(client, email, "Brand-New-Pass-7")
    assert fresh.status_code == 200
    # A token issued right after the change (same second) is valid.
    me = await client.get("/api/auth/me", headers=bearer(fresh.json()["data"]["accessToken"]))
    assert me.status_code == 200
    (event,) = await _events("user.password_changed")
    assert event["data"] == {"userId": data["user"]["id"]}


async def test_password_guessing_through_change_is_locked(app_client: Any) -> None:
    client = await _client(app_client)
    data = await register(client)
    headers = bearer(data["accessToken"])
    body = {"currentPassword": OTHER_PASSWORD, "newPassword": "Brand-New-Pass-7"}
    for _ in range(5):
        response = await client.post("/api/auth/password", json=body, headers=headers)
        assert response.status_code == 401
    locked = await client.post("/api/auth/password", json=body, headers=headers)
    assert locked.status_code == 423 and _error(locked)["code"] == "ACCOUNT_LOCKED"


# --- sessions, logout --------------------------------------------------------------------


async def test_sessions_list_and_revoke(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    first = await register(client, email=email)
    second = (await login(client, email, **{"User-Agent": "phone"})).json()["data"]
    stranger = await register(client)
    listed = (await client.get("/api/auth/sessions", headers=bearer(first["accessToken"]))).json()[
        "data"
    ]["sessions"]
    assert len(listed) == 2
    for item in listed:
        assert set(item) == {"id", "createdAt", "lastUsedAt", "userAgent", "ip", "current"}
        assert item["createdAt"].endswith("Z") and item["lastUsedAt"].endswith("Z")
    phone = next(s for s in listed if s["userAgent"] == "phone")
    assert phone["current"] is False
    # Not yours, unknown, not a UUID → 404 SESSION_NOT_FOUND.
    other_sid = (
        await client.get("/api/auth/sessions", headers=bearer(stranger["accessToken"]))
    ).json()["data"]["sessions"][0]["id"]
    for sid in (other_sid, "0b6f7a3e-1c1d-4f6a-9a51-3f1b2c3d4e5f", "not-a-uuid"):
        response = await client.delete(
            f"/api/auth/sessions/{sid}", headers=bearer(first["accessToken"])
        )
        assert response.status_code == 404 and _error(response)["code"] == "SESSION_NOT_FOUND"
    gone = await client.delete(
        f"/api/auth/sessions/{phone['id']}", headers=bearer(first["accessToken"])
    )
    assert gone.status_code == 204 and gone.content == b""
    (ended,) = await _events("user.logged_out")  # the gateway closes that session's sockets
    assert ended["data"] == {
        "userId": first["user"]["id"],
        "allSessions": False,
        "sessionId": phone["id"],
    }
    again = await client.delete(
        f"/api/auth/sessions/{phone['id']}", headers=bearer(first["accessToken"])
    )
    assert again.status_code == 404
    # The revoked session's tokens stop working at once.
    assert (
        await client.get("/api/auth/me", headers=bearer(second["accessToken"]))
    ).status_code == 401
    refreshed = await client.post(
        "/api/auth/refresh", json={"refreshToken": second["refreshToken"]}
    )
    assert refreshed.status_code == 401 and _error(refreshed)["code"] == "TOKEN_INVALID"
    remaining = (
        await client.get("/api/auth/sessions", headers=bearer(first["accessToken"]))
    ).json()["data"]["sessions"]
    assert [s["current"] for s in remaining] == [True]


async def test_logout_without_body_ends_this_session_only(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    first = await register(client, email=email)
    second = (await login(client, email)).json()["data"]
    response = await client.post("/api/auth/logout", headers=bearer(first["accessToken"]))
    assert response.status_code == 200 and response.json()["data"] == {"message": "Logged out"}
    me = await client.get("/api/auth/me", headers=bearer(first["accessToken"]))
    assert me.status_code == 401 and _error(me)["code"] == "TOKEN_INVALID"
    refreshed = await client.post("/api/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert refreshed.status_code == 401
    assert (
        await client.get("/api/auth/me", headers=bearer(second["accessToken"]))
    ).status_code == 200
    (event,) = await _events("user.logged_out")
    ended = jwt.decode(first["accessToken"], options={"verify_signature": False})["sid"]
    assert event["data"] == {
        "userId": first["user"]["id"],
        "allSessions": False,
        "sessionId": ended,
    }


async def test_logout_with_refresh_token_and_all_sessions(app_client: Any) -> None:
    client = await _client(app_client)
    email = unique_email()
    first = await register(client, email=email)
    second = (await login(client, email)).json()["data"]
    third = (await login(client, email)).json()["data"]
    # End the second session, using the third's access token.
    response = await client.post(
        "/api/auth/logout",
        json={"refreshToken": second["refreshToken"]},
        headers=bearer(third["accessToken"]),
    )
    assert response.status_code == 200
    assert (
        await client.post("/api/auth/refresh", json={"refreshToken": second["refreshToken"]})
    ).status_code == 401
    assert (
        await client.get("/api/auth/me", headers=bearer(second["accessToken"]))
    ).status_code == 401
    # Someone else's refresh token cannot be used to end a session.
    stranger = await register(client)
    foreign = await client.post(
        "/api/auth/logout",
        json={"refreshToken": stranger["refreshToken"]},
        headers=bearer(first["accessToken"]),
    )
    assert foreign.status_code == 401
    everything = await client.post(
        "/api/auth/logout", json={"allSessions": True}, headers=bearer(first["accessToken"])
    )
    assert everything.status_code == 200
    for data in (first, third):
        assert (
            await client.get("/api/auth/me", headers=bearer(data["accessToken"]))
        ).status_code == 401
        assert (
            await client.post("/api/auth/refresh", json={"refreshToken": data["refreshToken"]})
        ).status_code == 401
    assert (
        await client.get("/api/auth/me", headers=bearer(stranger["accessToken"]))
    ).status_code == 200
    events = await _events("user.logged_out")
    assert [e["data"]["allSessions"] for e in events] == [False, True]
    async with runtime() as rt, rt.sessionmaker() as session:
        open_sessions = (
            await session.execute(
                select(AuthSession.id).where(
                    AuthSession.user_id == first["user"]["id"], AuthSession.revoked.is_(False)
                )
            )
        ).all()
        assert open_sessions == []


async def test_client_ip_from_trusted_proxy_only(app_client: Any) -> None:
    direct = await _client(app_client)
    proxied = await app_client("auth", trusted_proxies=["127.0.0.0/8", "not-a-network"])
    email = unique_email()
    await register(direct, email=email)
    # The left-most hop is whatever the client sent; the right-most untrusted hop is the
    # address the trusted proxy (the peer, 127.0.0.1) saw.
    spoof = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}
    assert (await login(direct, email, **spoof)).status_code == 200
    assert (await login(proxied, email, **spoof)).status_code == 200
    assert (await login(proxied, email, **{"X-Forwarded-For": "garbage"})).status_code == 200
    ips = [e["data"]["ip"] for e in await _events("user.logged_in")]
    assert ips == ["127.0.0.1", "10.0.0.1", "127.0.0.1"]


async def test_auth_records_the_right_most_untrusted_hop(app_client: Any) -> None:
    """Behind two trusted proxies (the peer 127.0.0.1 and 10.0.0.1), the client is the hop
    the outer proxy saw, not the left-most one a client can write itself."""
    proxied = await app_client("auth", trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"])
    forwarded = {"X-Forwarded-For": "198.51.100.66, 203.0.113.9, 10.0.0.1"}
    user = await register(proxied, **forwarded)
    response = await login(proxied, user["user"]["email"], **{"X-Forwarded-For": "2001:DB8::7"})
    assert response.status_code == 200
    assert [e["data"]["ip"] for e in await _events("user.logged_in")] == ["2001:db8::7"]
    sessions = await proxied.get(
        "/api/auth/sessions", headers=bearer(response.json()["data"]["accessToken"])
    )
    assert sorted(s["ip"] for s in sessions.json()["data"]["sessions"]) == [
        "2001:db8::7",
        "203.0.113.9",
    ]
