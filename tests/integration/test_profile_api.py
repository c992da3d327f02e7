"""/api/profile (api-contracts §6) in-process against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from paysys.profile.cache import DATA_KEY
from paysys.profile.schemas import ProfileEnvelope
from tests.support.profile import TestUser, client_user, outbox_events, profile_rows

pytestmark = pytest.mark.usefixtures("clean_state")

DEFAULTS = {
    "theme": "system",
    "language": "en",
    "currency": "USD",
    "timezone": "UTC",
    "notifications": {"email": True, "push": False, "sms": False},
}


async def _setup(app_client) -> tuple[httpx.AsyncClient, TestUser]:  # type: ignore[no-untyped-def]
    client = await app_client("profile")
    return client, await client_user(client)


def _error(response: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    return body["error"]  # type: ignore[no-any-return]


async def test_get_creates_profile_with_defaults_and_user(app_client) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    assert await profile_rows(client.app.state.sessionmaker, user.id) == []
    r = await client.get("/api/profile", headers=user.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    data = body["data"]
    assert set(data) == {
        "id",
        "userId",
        "phoneNumber",
        "phone",
        "address",
        "avatarUrl",
        "bio",
        "preferences",
        "createdAt",
        "updatedAt",
        "user",
    }
    assert data["userId"] == str(user.id)
    assert data["user"] == {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "role": "CUSTOMER",
    }
    assert data["phoneNumber"] is None and data["phone"] is None and data["bio"] is None
    assert data["preferences"] == DEFAULTS
    assert data["createdAt"].endswith("Z") and data["updatedAt"].endswith("Z")
    uuid.UUID(data["id"])
    again = await client.get("/api/profile", headers=user.headers)
    assert again.json()["data"] == data
    assert len(await profile_rows(client.app.state.sessionmaker, user.id)) == 1


async def test_concurrent_first_gets_create_one_row(app_client) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    responses = await asyncio.gather(
        *(client.get("/api/profile", headers=user.headers) for _ in range(8))
    )
    assert [r.status_code for r in responses] == [200] * 8
    assert len({r.json()["data"]["id"] for r in responses}) == 1
    assert len(await profile_rows(client.app.state.sessionmaker, user.id)) == 1


async def test_auth_required(app_client) -> None:  # type: ignore[no-untyped-def]
    client = await app_client("profile")
    for method, path in [
        ("GET", "/api/profile"),
        ("PUT", "/api/profile"),
        ("PATCH", "/api/profile"),
        ("GET", "/api/profile/preferences"),
        ("PUT", "/api/profile/preferences"),
        ("PATCH", "/api/profile/preferences"),
    ]:
        r = await client.request(method, path, json={})
        _error(r, 401, "UNAUTHORIZED")
        r = await client.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
        _error(r, 401, "TOKEN_INVALID")


async def test_token_of_missing_user_is_404(app_client) -> None:  # type: ignore[no-untyped-def]
    from paysys.core.tokens import TokenCodec

    client = await app_client("profile")
    token, _ = TokenCodec(client.app.state.settings).issue_access(
        user_id=uuid.uuid4(), email="ghost@example.com", name="G", role="CUSTOMER", sid="s"
    )
    headers = {"Authorization": f"Bearer {token}"}
    _error(await client.get("/api/profile", headers=headers), 404, "USER_NOT_FOUND")
    _error(
        await client.patch("/api/profile", json={"bio": "x"}, headers=headers),
        404,
        "USER_NOT_FOUND",
    )


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_update_sets_normalises_and_keeps_absent_fields(app_client, method: str) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    r = await client.request(
        method,
        "/api/profile",
        json={
            "phoneNumber": " +1 (415) 555-01.00 ",
            "address": "  1 Main St  ",
            "avatarUrl": "https://cdn.example.com/a.png?s=64",
            "bio": "Hello",
        },
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["phoneNumber"] == "+14155550100" == data["phone"]
    assert data["address"] == "1 Main St"
    assert data["avatarUrl"] == "https://cdn.example.com/a.png?s=64"
    assert data["bio"] == "Hello"
    assert data["user"]["email"] == user.email
    r = await client.request(method, "/api/profile", json={"bio": "Bye"}, headers=user.headers)
    data = r.json()["data"]
    assert data["bio"] == "Bye" and data["phoneNumber"] == "+14155550100"
    assert data["address"] == "1 Main St"
    assert (await client.get("/api/profile", headers=user.headers)).json()["data"] == data


async def test_null_and_empty_string_clear_fields(app_client) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    await client.put(
        "/api/profile",
        json={
            "phoneNumber": "+33612345678",
            "address": "x",
            "avatarUrl": "http://a.b/c",
            "bio": "b",
        },
        headers=user.headers,
    )
    r = await client.patch(
        "/api/profile",
        json={"phoneNumber": None, "avatarUrl": "", "bio": "   "},
        headers=user.headers,
    )
    data = r.json()["data"]
    assert data["phoneNumber"] is None and data["avatarUrl"] is None and data["bio"] is None
    assert data["phone"] is None
    assert data["address"] == "x"


async def test_phone_is_a_read_only_alias(app_client) -> None:  # type: ignore[no-untyped-def]
    """api-contracts §6: the reference UI writes `phoneNumber` and reads `phone`."""
    client, user = await _setup(app_client)
    r = await client.put(
        "/api/profile", json={"phoneNumber": "+1 415 555 0100"}, headers=user.headers
    )
    assert r.status_code == 200 and r.json()["data"]["phone"] == "+14155550100"
    assert ProfileEnvelope.model_validate(r.json()).data.phone == "+14155550100"  # type: ignore[attr-defined]
    for _ in range(2):  # from PostgreSQL, then from the Redis copy
        data = (await client.get("/api/profile", headers=user.headers)).json()["data"]
        assert data["phone"] == data["phoneNumber"] == "+14155550100"
        assert list(data).index("phone") == list(data).index("phoneNumber") + 1
    # A copy cached by a version without the alias gets it on the way out.
    key = DATA_KEY.format(user.id)
    stored = json.loads(await client.app.state.redis.get(key))
    stored.pop("phone")
    await client.app.state.redis.set(key, json.dumps(stored), ex=60)
    assert (await client.get("/api/profile", headers=user.headers)).json()["data"] == data
    # Read-only: writing it is refused (nothing changes).
    r = await client.patch("/api/profile", json={"phone": "+4930901820"}, headers=user.headers)
    assert _error(r, 400, "VALIDATION_ERROR")["details"][0]["field"] == "phone"
    assert (await client.get("/api/profile", headers=user.headers)).json()["data"] == data


async def test_update_emits_event_without_personal_values(app_client) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    sm = client.app.state.sessionmaker
    await client.patch(
        "/api/profile",
        json={"phoneNumber": "+4930901820", "bio": "secret bio"},
        headers=user.headers,
    )
    await client.patch("/api/profile", json={"bio": None}, headers=user.headers)
    events = await outbox_events(sm)
    assert len(events) == 2
    first, second = events
    assert first["type"] == "profile.updated" and first["source"] == "profile-service"
    assert first["actorId"] == str(user.id)
    assert first["data"] == {
        "userId": str(user.id),
        "changes": {"bio": {"cleared": False}, "phoneNumber": {"cleared": False}},
    }
    assert "+4930901820" not in str(first) and "secret bio" not in str(first)
    assert second["data"]["changes"] == {"bio": {"cleared": True}}
    # Nothing changes: no event, same updatedAt.
    before = (await client.get("/api/profile", headers=user.headers)).json()["data"]
    r = await client.put(
        "/api/profile", json={"phoneNumber": "+49 30 901820"}, headers=user.headers
    )
    assert r.json()["data"]["updatedAt"] == before["updatedAt"]
    assert len(await outbox_events(sm)) == 2


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"phoneNumber": "12345678"}, "phoneNumber", "E.164"),
        ({"phoneNumber": "+1234567"}, "phoneNumber", "E.164"),
        ({"phoneNumber": "+1234567890123456"}, "phoneNumber", "E.164"),
        ({"phoneNumber": "+0123456789"}, "phoneNumber", "E.164"),
        ({"phoneNumber": "+1 415 CALL ME"}, "phoneNumber", "E.164"),
        ({"phoneNumber": 14155550100}, "phoneNumber", "string"),
        ({"avatarUrl": "javascript:alert(1)"}, "avatarUrl", "http(s)"),
        ({"avatarUrl": "ftp://example.com/a.png"}, "avatarUrl", "http(s)"),
        ({"avatarUrl": "https://"}, "avatarUrl", "http(s)"),
        ({"avatarUrl": "https://user:pw@example.com/a"}, "avatarUrl", "credentials"),
        ({"avatarUrl": "https://example.com/" + "a" * 2030}, "avatarUrl", "2048"),
        ({"avatarUrl": "https://exa mple.com/"}, "avatarUrl", "http(s)"),
        ({"avatarUrl": "https://example.com:99999/"}, "avatarUrl", "http(s)"),
        ({"bio": "b" * 1001}, "bio", "1000"),
        ({"address": "a" * 501}, "address", "500"),
        ({"bio": ["x"]}, "bio", "string"),
        ({"role": "ADMIN"}, "role", "unknown field"),
        ({"userId": str(uuid.uuid4())}, "userId", "unknown field"),
    ],
)
async def test_update_validation(app_client, body, field: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    r = await client.patch("/api/profile", json=body, headers=user.headers)
    err = _error(r, 400, "VALIDATION_ERROR")
    assert err["details"][0]["field"] == field
    assert fragment in err["details"][0]["message"], err
    assert err["message"].startswith(f"{field}: ")


async def test_update_limits_accept_boundaries(app_client) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    url = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    r = await client.put(
        "/api/profile",
        json={
            "bio": "b" * 1000,
            "address": "a" * 500,
            "avatarUrl": url,
            "phoneNumber": "+123456789012345",
        },
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["avatarUrl"] == url


async def test_bad_bodies(app_client) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    r = await client.put(
        "/api/profile",
        content=b'{"bio": ',
        headers={**user.headers, "content-type": "application/json"},
    )
    _error(r, 400, "INVALID_JSON")
    _error(
        await client.put("/api/profile", json=["bio"], headers=user.headers),
        400,
        "VALIDATION_ERROR",
    )
    _error(await client.put("/api/profile", headers=user.headers), 400, "VALIDATION_ERROR")
    # Body limits (api-contracts §1.4, revision 2): 8 MiB for the profile update (avatar data
    # URLs), 1 MiB everywhere else.
    big = {"bio": "x" * (1024 * 1024 + 10)}
    _error(
        await client.put("/api/profile/preferences", json=big, headers=user.headers),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    over_one = await client.put("/api/profile", json=big, headers=user.headers)
    assert _error(over_one, 400, "VALIDATION_ERROR")["details"][0]["field"] == "bio"
    huge = {"bio": "x" * (8 * 1024 * 1024 + 10)}
    error = _error(
        await client.patch("/api/profile", json=huge, headers=user.headers),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    assert error["message"] == "Request body exceeds 8 MiB"


async def test_preferences_defaults_and_deep_merge(app_client) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    r = await client.get("/api/profile/preferences", headers=user.headers)
    assert r.status_code == 200 and r.json() == {"success": True, "data": DEFAULTS}
    r = await client.patch(
        "/api/profile/preferences",
        json={"theme": "dark", "notifications": {"sms": True}},
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    expected = {
        **DEFAULTS,
        "theme": "dark",
        "notifications": {"email": True, "push": False, "sms": True},
    }
    assert r.json()["data"] == expected
    r = await client.put(
        "/api/profile/preferences",
        json={
            "notifications": {"email": False},
            "language": "pt-br",
            "currency": "eur",
            "timezone": "America/Sao_Paulo",
        },
        headers=user.headers,
    )
    expected = {
        "theme": "dark",
        "language": "pt-BR",
        "currency": "EUR",
        "timezone": "America/Sao_Paulo",
        "notifications": {"email": False, "push": False, "sms": True},
    }
    assert r.json()["data"] == expected
    assert (await client.get("/api/profile/preferences", headers=user.headers)).json()[
        "data"
    ] == expected
    profile = (await client.get("/api/profile", headers=user.headers)).json()["data"]
    assert profile["preferences"] == expected


async def test_preferences_null_restores_defaults(app_client) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    await client.put(
        "/api/profile/preferences",
        json={
            "theme": "light",
            "timezone": "Asia/Tokyo",
            "notifications": {"push": True, "sms": True},
        },
        headers=user.headers,
    )
    r = await client.patch(
        "/api/profile/preferences",
        json={"theme": None, "notifications": {"push": None}},
        headers=user.headers,
    )
    data = r.json()["data"]
    assert data["theme"] == "system" and data["timezone"] == "Asia/Tokyo"
    assert data["notifications"] == {"email": True, "push": False, "sms": True}
    r = await client.patch(
        "/api/profile/preferences", json={"notifications": None}, headers=user.headers
    )
    assert r.json()["data"]["notifications"] == DEFAULTS["notifications"]


async def test_preferences_events(app_client) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    sm = client.app.state.sessionmaker
    await client.patch(
        "/api/profile/preferences",
        json={"theme": "dark", "notifications": {"push": True}},
        headers=user.headers,
    )
    (event,) = await outbox_events(sm)
    assert event["data"] == {
        "userId": str(user.id),
        "changes": {
            "preferences.notifications.push": {"old": False, "new": True},
            "preferences.theme": {"old": "system", "new": "dark"},
        },
    }
    # Same values again, or a default written explicitly: no visible change, no event.
    await client.put("/api/profile/preferences", json={"theme": "dark"}, headers=user.headers)
    await client.put("/api/profile/preferences", json={"language": "en"}, headers=user.headers)
    await client.put("/api/profile/preferences", json={}, headers=user.headers)
    assert len(await outbox_events(sm)) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"theme": "blue"}, "theme"),
        ({"language": "english"}, "language"),
        ({"language": "en-"}, "language"),
        ({"language": "e"}, "language"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "US"}, "currency"),
        ({"currency": "usd1"}, "currency"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": "utc"}, "timezone"),
        ({"notifications": {"email": "yes"}}, "notifications.email"),
        ({"notifications": {"email": 1}}, "notifications.email"),
        ({"notifications": {"fax": True}}, "notifications.fax"),
        ({"notifications": True}, "notifications"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_preferences_validation(app_client, body, field: str) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    r = await client.patch("/api/profile/preferences", json=body, headers=user.headers)
    err = _error(r, 400, "VALIDATION_ERROR")
    assert err["details"][0]["field"] == field, err
    assert len(await outbox_events(client.app.state.sessionmaker)) == 0


async def test_cache_fill_and_invalidation_on_change(app_client) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    redis = client.app.state.redis
    key = DATA_KEY.format(user.id)
    assert await redis.get(key) is None
    first = (await client.get("/api/profile", headers=user.headers)).json()["data"]
    assert await redis.get(key) is not None
    assert 0 < await redis.ttl(key) <= 300
    await client.patch("/api/profile", json={"bio": "new"}, headers=user.headers)
    assert await redis.get(key) is None
    second = (await client.get("/api/profile", headers=user.headers)).json()["data"]
    assert second["bio"] == "new" and second["id"] == first["id"]
    await client.patch("/api/profile/preferences", json={"theme": "dark"}, headers=user.headers)
    assert await redis.get(key) is None
    prefs = (await client.get("/api/profile/preferences", headers=user.headers)).json()["data"]
    assert prefs["theme"] == "dark"


async def test_cached_copy_is_served(app_client) -> None:  # type: ignore[no-untyped-def]
    """Reads come from Redis: a change behind the service's back stays invisible until the
    copy is invalidated (what the user.updated consumer does)."""
    from sqlalchemy import text

    client, user = await _setup(app_client)
    await client.get("/api/profile", headers=user.headers)
    async with client.app.state.sessionmaker() as session:
        await session.execute(
            text("UPDATE users SET name = 'Renamed' WHERE id = :id"), {"id": user.id}
        )
        await session.commit()
    cached = (await client.get("/api/profile", headers=user.headers)).json()["data"]
    assert cached["user"]["name"] == user.name
    await client.app.state.redis.delete(DATA_KEY.format(user.id))
    fresh = (await client.get("/api/profile", headers=user.headers)).json()["data"]
    assert fresh["user"]["name"] == "Renamed"


async def test_redis_down_reads_and_writes_from_database(app_client, redis_server) -> None:  # type: ignore[no-untyped-def]
    client, user = await _setup(app_client)
    await client.get("/api/profile", headers=user.headers)
    redis_server.stop()
    try:
        r = await client.patch("/api/profile", json={"bio": "offline"}, headers=user.headers)
        assert r.status_code == 200, r.text
        r = await client.get("/api/profile", headers=user.headers)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["bio"] == "offline"
    finally:
        redis_server.start()
