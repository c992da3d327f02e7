"""Admin user management: list/search/filter/sort/paginate, detail, create, update, role,
status, soft delete, guards, instant revocation, events."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.support.admin import (
    PASSWORD,
    admin_and_token,
    bearer,
    fetch,
    insert_payment,
    insert_user,
    session_token,
    token_for,
)


@pytest.fixture
async def client(app_client, clean_state):  # type: ignore[no-untyped-def]
    return await app_client("admin")


async def events_of(type_: str) -> list[dict]:  # type: ignore[type-arg]
    import json

    rows = await fetch("SELECT payload FROM outbox WHERE type = $1 ORDER BY seq", type_)
    return [json.loads(r["payload"]) for r in rows]


# --- list ------------------------------------------------------------------------------------


async def test_list_paginates_sorts_and_filters(client) -> None:  # type: ignore[no-untyped-def]
    _admin, headers = await admin_and_token(email="root@example.com", name="Root")
    names = ["alice", "bob", "carol", "dave", "erin"]
    for i, name in enumerate(names):
        await insert_user(
            role="VENDOR" if i % 2 else "CUSTOMER",
            email=f"{name}@shop.test",
            name=name.title(),
            is_active=i != 4,
        )
    await insert_user(email="gone@shop.test", name="Gone", deleted=True)

    r = await client.get("/api/admin/users", headers=headers, params={"limit": 2})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["pagination"] == {
        "page": 1,
        "limit": 2,
        "total": 6,
        "totalPages": 3,
        "hasMore": True,
    }
    assert len(data["users"]) == 2
    user = data["users"][0]
    assert set(user) >= {
        "id",
        "email",
        "name",
        "role",
        "isActive",
        "emailVerified",
        "createdAt",
        "updatedAt",
    }
    assert "passwordHash" not in user and "password_hash" not in user

    r = await client.get(
        "/api/admin/users", headers=headers, params={"sort": "name", "order": "asc", "limit": 100}
    )
    assert [u["name"] for u in r.json()["data"]["users"]] == [
        "Alice",
        "Bob",
        "Carol",
        "Dave",
        "Erin",
        "Root",
    ]
    r = await client.get(
        "/api/admin/users", headers=headers, params={"sort": "email", "order": "desc"}
    )
    emails = [u["email"] for u in r.json()["data"]["users"]]
    assert emails == sorted(emails, reverse=True)

    r = await client.get("/api/admin/users", headers=headers, params={"role": "VENDOR"})
    assert {u["name"] for u in r.json()["data"]["users"]} == {"Bob", "Dave"}
    r = await client.get("/api/admin/users", headers=headers, params={"isActive": "false"})
    assert [u["name"] for u in r.json()["data"]["users"]] == ["Erin"]
    r = await client.get("/api/admin/users", headers=headers, params={"search": "SHOP.TEST"})
    assert r.json()["data"]["pagination"]["total"] == 5
    r = await client.get("/api/admin/users", headers=headers, params={"search": "aro"})
    assert [u["name"] for u in r.json()["data"]["users"]] == ["Carol"]
    # LIKE wildcards are literal characters.
    r = await client.get("/api/admin/users", headers=headers, params={"search": "%"})
    assert r.json()["data"]["users"] == []

    r = await client.get("/api/admin/users", headers=headers, params={"includeDeleted": "true"})
    data = r.json()["data"]
    assert data["pagination"]["total"] == 7
    gone = [u for u in data["users"] if u["email"] == "gone@shop.test"]
    assert gone and gone[0]["deletedAt"] is not None
    # The detail of a deleted user is gone too, unless asked for.
    r = await client.get(f"/api/admin/users/{gone[0]['id']}", headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "USER_NOT_FOUND"
    r = await client.get(
        f"/api/admin/users/{gone[0]['id']}", headers=headers, params={"includeDeleted": "1"}
    )
    assert r.status_code == 200 and r.json()["data"]["deletedAt"] is not None


async def test_list_ties_are_stable(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    for _ in range(6):
        await insert_user(role="CUSTOMER", name="Same")
    seen = []
    for page in (1, 2, 3):
        r = await client.get(
            "/api/admin/users",
            headers=headers,
            params={"sort": "role", "order": "asc", "limit": 3, "page": page},
        )
        seen += [u["id"] for u in r.json()["data"]["users"]]
    assert len(seen) == 7 == len(set(seen))


BAD_USER_QUERIES = [
    {"page": "0"},
    {"limit": "101"},
    {"limit": "0"},
    {"sort": "password"},
    {"order": "up"},
    {"role": "ROOT"},
    {"isActive": "maybe"},
    {"includeDeleted": "yes"},
    {"page": "x"},
    {"sortBy": "name"},
    # integers are ASCII digits only (`int()` would read `٣` as 3 and fail on `²`)
    {"page": "²"},
    {"limit": "٣"},
    {"page": "1" * 400},
    {"isActive": "TRUE"},
    {"search": "a\x00b"},  # PostgreSQL cannot compare NUL: 400, not 500
    {"search": "x" * 255},
    [("limit", "5"), ("limit", "6")],  # given twice
]


async def test_list_rejects_bad_query(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    for params in BAD_USER_QUERIES:
        r = await client.get("/api/admin/users", headers=headers, params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    # the model that validates also documents: the same rules are in the operation
    document = (await client.get("/openapi.json")).json()
    parameters = {
        p["name"]: p["schema"] for p in document["paths"]["/api/admin/users"]["get"]["parameters"]
    }
    assert set(parameters) == {
        "page",
        "limit",
        "sort",
        "order",
        "role",
        "isActive",
        "search",
        "includeDeleted",
    }
    assert parameters["limit"]["maximum"] == 100 and parameters["search"]["maxLength"] == 254
    assert parameters["isActive"]["enum"] == ["true", "false", "1", "0"]
    r = await client.get(
        "/api/admin/users", headers=headers, params={"isActive": "1", "includeDeleted": "0"}
    )
    assert r.status_code == 200, r.text


# --- detail ----------------------------------------------------------------------------------


async def test_detail_has_profile_and_payment_stats(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    customer = await insert_user(role="CUSTOMER")
    vendor = await insert_user(role="VENDOR")
    conn_rows = [
        (customer["id"], vendor["id"]),
        (customer["id"], vendor["id"]),
        (vendor["id"], customer["id"]),
    ]
    for sender, recipient in conn_rows:
        await insert_payment(sender, recipient)
    r = await client.get(f"/api/admin/users/{customer['id']}", headers=headers)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["id"] == str(customer["id"]) and data["email"] == customer["email"]
    assert data["stats"] == {"sentPayments": 2, "receivedPayments": 1}
    assert data["profile"] is None  # no profile row yet (the profile consumer makes it)

    await fetch(
        "INSERT INTO profiles (id, user_id, bio, preferences) VALUES ($1, $2, 'hi',"
        ' \'{"theme": "dark"}\'::jsonb)',
        uuid.uuid4(),
        customer["id"],
    )
    profile = (await client.get(f"/api/admin/users/{customer['id']}", headers=headers)).json()[
        "data"
    ]["profile"]
    assert profile["userId"] == str(customer["id"]) and profile["bio"] == "hi"
    assert profile["preferences"]["theme"] == "dark"
    assert profile["preferences"]["notifications"] == {"email": True, "push": False, "sms": False}


async def test_detail_profile_is_the_profile_services_view(  # type: ignore[no-untyped-def]
    client, app_client
) -> None:
    """The admin detail shows the profile exactly as the profile service answers its owner
    (same fields, same preference defaults and merge), only without the nested `user`."""
    _, headers = await admin_and_token()
    customer = await insert_user(role="CUSTOMER")
    profile_client = await app_client("profile")
    own = bearer(await session_token(customer))
    for path, body in (
        ("/api/profile", {"bio": "hello", "phoneNumber": "+14155550100"}),
        ("/api/profile/preferences", {"language": "fr", "notifications": {"sms": True}}),
    ):
        r = await profile_client.put(path, headers=own, json=body)
        assert r.status_code == 200, r.text
    mine = (await profile_client.get("/api/profile", headers=own)).json()["data"]
    assert mine.pop("user")["id"] == str(customer["id"])
    r = await client.get(f"/api/admin/users/{customer['id']}", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["profile"] == mine
    assert mine["preferences"]["notifications"] == {"email": True, "push": False, "sms": True}


async def test_detail_unknown_and_malformed_ids_are_404(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    for user_id in (uuid.uuid4(), "not-a-uuid", "1"):
        r = await client.get(f"/api/admin/users/{user_id}", headers=headers)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "USER_NOT_FOUND"


# --- create ----------------------------------------------------------------------------------


async def test_create_user_with_registration_policy(client) -> None:  # type: ignore[no-untyped-def]
    admin, headers = await admin_and_token()
    body = {
        "email": "  New.Vendor@Example.COM ",
        "password": PASSWORD,
        "name": " Nv ",
        "role": "VENDOR",
    }
    r = await client.post("/api/admin/users", headers=headers, json=body)
    assert r.status_code == 201, r.text
    user = r.json()["data"]
    assert user["email"] == "new.vendor@example.com" and user["role"] == "VENDOR"
    assert user["name"] == "Nv" and user["isActive"] is True

    (created,) = await events_of("user.created")
    assert created["data"]["via"] == "admin"
    assert created["actorId"] == str(admin["id"])
    assert "password" not in str(created).lower()

    r = await client.post(
        "/api/admin/users", headers=headers, json={**body, "email": "NEW.vendor@example.com"}
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "EMAIL_EXISTS"

    # An admin may create admins (registration may not).
    r = await client.post(
        "/api/admin/users",
        headers=headers,
        json={**body, "email": "a2@example.com", "role": "ADMIN"},
    )
    assert r.status_code == 201 and r.json()["data"]["role"] == "ADMIN"


BAD_CREATE_BODIES = [
    ({"password": "short"}, "password"),
    ({"password": "alllowercase123!"}, "password"),
    ({"email": "not-an-email"}, "email"),
    ({"role": "ROOT"}, "role"),
    ({"name": ""}, "name"),
    ({"isAdmin": True}, "isAdmin"),
]


async def test_create_user_validation(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    for patch, field in BAD_CREATE_BODIES:
        body = {
            "email": "v@example.com",
            "password": PASSWORD,
            "name": "V",
            "role": "CUSTOMER",
            **patch,
        }
        r = await client.post("/api/admin/users", headers=headers, json=body)
        assert r.status_code == 400, (patch, r.text)
        error = r.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"][0]["field"] == field


async def test_create_requires_role_and_password_not_email(client) -> None:  # type: ignore[no-untyped-def]
    _, headers = await admin_and_token()
    r = await client.post(
        "/api/admin/users",
        headers=headers,
        json={"email": "v@example.com", "password": PASSWORD, "name": "V"},
    )
    assert r.status_code == 400 and r.json()["error"]["details"][0]["field"] == "role"


# --- update ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_update_name_and_email(client, method) -> None:  # type: ignore[no-untyped-def]
    admin, headers = await admin_and_token()
    user = await insert_user()
    other = await insert_user()
    url = f"/api/admin/users/{user['id']}"
    r = await client.request(
        method, url, headers=headers, json={"name": "Renamed", "email": "X@Y.io"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["name"] == "Renamed" and r.json()["data"]["email"] == "x@y.io"
    (updated,) = await events_of("user.updated")
    assert updated["actorId"] == str(admin["id"])
    assert updated["data"]["changes"]["email"] == {"old": user["email"], "new": "x@y.io"}

    r = await client.request(method, url, headers=headers, json={"email": other["email"].upper()})
    assert r.status_code == 409 and r.json()["error"]["code"] == "EMAIL_EXISTS"
    r = await client.request(method, url, headers=headers, json={"role": "ADMIN"})
    assert r.status_code == 400  # no mass assignment
    r = await client.request(
        method, f"/api/admin/users/{uuid.uuid4()}", headers=headers, json={"name": "n"}
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "USER_NOT_FOUND"


# --- role ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_role_change_revokes_old_tokens_at_once(client, method) -> None:  # type: ignore[no-untyped-def]
    _admin, headers = await admin_and_token()
    vendor = await insert_user(role="VENDOR")
    vendor_token = bearer(token_for(vendor))
    target_admin = await insert_user(role="ADMIN")
    target_token = bearer(token_for(target_admin))
    assert (await client.get("/api/admin/users", headers=target_token)).status_code == 200

    r = await client.request(
        method,
        f"/api/admin/users/{target_admin['id']}/role",
        headers=headers,
        json={"role": "CUSTOMER"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["role"] == "CUSTOMER"
    r = await client.get("/api/admin/users", headers=target_token)
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_INVALID"
    (event,) = await events_of("user.role_changed")
    assert event["data"] == {
        "userId": str(target_admin["id"]),
        "oldRole": "ADMIN",
        "newRole": "CUSTOMER",
    }
    # A token issued after the change (under the user's new token version) works (with the
    # new role: 403 here, not 401).
    fresh = bearer(token_for({**target_admin, "role": "CUSTOMER"}, token_version=1))
    assert (await client.get("/api/admin/users", headers=fresh)).status_code == 403
    # Unrelated users keep their tokens.
    assert (await client.get("/api/admin/users", headers=vendor_token)).status_code == 403

    r = await client.request(
        method, f"/api/admin/users/{vendor['id']}/role", headers=headers, json={"role": "KING"}
    )
    assert r.status_code == 400


async def test_admin_cannot_demote_itself_or_the_last_admin(client) -> None:  # type: ignore[no-untyped-def]
    admin, headers = await admin_and_token()
    r = await client.put(
        f"/api/admin/users/{admin['id']}/role", headers=headers, json={"role": "CUSTOMER"}
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "CANNOT_MODIFY_SELF"
    r = await client.patch(
        f"/api/admin/users/{admin['id']}/status", headers=headers, json={"isActive": False}
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "CANNOT_MODIFY_SELF"
    r = await client.delete(f"/api/admin/users/{admin['id']}", headers=headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "CANNOT_MODIFY_SELF"
    assert await events_of("user.role_changed") == []


async def test_last_admin_guard_under_concurrent_demotions(client) -> None:  # type: ignore[no-untyped-def]
    survivor = await admin_and_token()
    for _ in range(3):
        (a, a_headers), (b, b_headers) = survivor, await admin_and_token()
        # Each demotes the other at the same time: exactly one may win, one admin remains
        # (their row locks cross: PostgreSQL may abort one as a deadlock; it is retried).
        results = await asyncio.gather(
            client.put(
                f"/api/admin/users/{b['id']}/role", headers=a_headers, json={"role": "VENDOR"}
            ),
            client.put(
                f"/api/admin/users/{a['id']}/role", headers=b_headers, json={"role": "VENDOR"}
            ),
        )
        codes = [r.status_code for r in results]
        assert sorted(codes)[0] == 200, [r.text for r in results]
        # The loser is refused: its own token was revoked (401) or the guard held (409).
        assert sorted(codes)[1] in (401, 409), [r.text for r in results]
        rows = await fetch("SELECT id FROM users WHERE role = 'ADMIN' AND is_active")
        assert len(rows) == 1
        survivor = (a, a_headers) if codes[0] == 200 else (b, b_headers)
        assert rows[0]["id"] == survivor[0]["id"]


async def test_last_active_admin_cannot_be_deactivated_by_deactivated_peer(client) -> None:  # type: ignore[no-untyped-def]
    a, _a_headers = await admin_and_token()
    b = await insert_user(role="ADMIN", is_active=False)
    # b is inactive: a is the last active admin; b's stale token cannot act anyway.
    r = await client.patch(
        f"/api/admin/users/{a['id']}/status", headers=bearer(token_for(b)), json={"isActive": False}
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "LAST_ADMIN"
    r = await client.delete(f"/api/admin/users/{a['id']}", headers=bearer(token_for(b)))
    assert r.status_code == 409 and r.json()["error"]["code"] == "LAST_ADMIN"


# --- status / delete -------------------------------------------------------------------------


async def test_deactivate_revokes_tokens_and_reactivate(client) -> None:  # type: ignore[no-untyped-def]
    _admin, headers = await admin_and_token()
    other_admin = await insert_user(role="ADMIN")
    victim_token = bearer(token_for(other_admin))
    assert (await client.get("/api/admin/stats", headers=victim_token)).status_code == 200
    url = f"/api/admin/users/{other_admin['id']}/status"
    r = await client.patch(url, headers=headers, json={"isActive": False, "reason": "  fraud  "})
    assert r.status_code == 200 and r.json()["data"]["isActive"] is False
    r = await client.get("/api/admin/stats", headers=victim_token)
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_INVALID"
    (event,) = await events_of("user.status_changed")
    assert event["data"] == {"userId": str(other_admin["id"]), "isActive": False, "reason": "fraud"}

    # Same state again: no change, no event.
    r = await client.patch(url, headers=headers, json={"isActive": False})
    assert r.status_code == 200 and len(await events_of("user.status_changed")) == 1
    r = await client.patch(url, headers=headers, json={"isActive": True})
    assert r.status_code == 200 and r.json()["data"]["isActive"] is True
    assert len(await events_of("user.status_changed")) == 2
    # The old token stays dead after reactivation.
    assert (await client.get("/api/admin/stats", headers=victim_token)).status_code == 401

    r = await client.patch(url, headers=headers, json={"isActive": "nope"})
    assert r.status_code == 400
    r = await client.patch(url, headers=headers, json={})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["field"] == "isActive"
    r = await client.put(url, headers=headers, json={"isActive": True})
    assert r.status_code == 405


async def test_soft_delete_frees_email_keeps_row_and_payments(client) -> None:  # type: ignore[no-untyped-def]
    _admin, headers = await admin_and_token()
    user = await insert_user(email="leaving@example.com")
    vendor = await insert_user(role="VENDOR")
    await insert_payment(user["id"], vendor["id"])
    user_token = bearer(token_for(user))
    r = await client.delete(f"/api/admin/users/{user['id']}", headers=headers)
    assert r.status_code == 204 and r.content == b""
    (row,) = await fetch("SELECT email, is_active, deleted_at FROM users WHERE id = $1", user["id"])
    assert row["is_active"] is False and row["deleted_at"] is not None
    assert row["email"] != "leaving@example.com"
    assert (await fetch("SELECT count(*) AS n FROM payments WHERE sender_id = $1", user["id"]))[0][
        "n"
    ] == 1
    (event,) = await events_of("user.deleted")
    assert event["data"] == {"userId": str(user["id"])}

    # Left out of the list unless asked for; the email can be used again.
    listed = (await client.get("/api/admin/users", headers=headers)).json()["data"]["users"]
    assert str(user["id"]) not in {u["id"] for u in listed}
    r = await client.post(
        "/api/admin/users",
        headers=headers,
        json={
            "email": "leaving@example.com",
            "password": PASSWORD,
            "name": "Back",
            "role": "CUSTOMER",
        },
    )
    assert r.status_code == 201
    # Deleting twice: the user is gone.
    r = await client.delete(f"/api/admin/users/{user['id']}", headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "USER_NOT_FOUND"
    # Its tokens are revoked on every service (they all check the same revocation marks).
    from paysys.core.config import get_settings
    from paysys.core.redis import create_redis
    from paysys.core.revocation import is_revoked
    from paysys.core.tokens import TokenCodec

    redis = create_redis(get_settings().redis_url)
    try:
        principal = TokenCodec(get_settings()).decode_access(user_token["Authorization"][7:])
        assert await is_revoked(redis, principal)
    finally:
        await redis.aclose()


async def test_deactivation_with_redis_down_still_revokes(client, redis_server) -> None:  # type: ignore[no-untyped-def]
    from tests.support.admin import session_token

    _, headers = await admin_and_token()
    victim = await insert_user(role="ADMIN")
    victim_headers = bearer(await session_token(victim))
    assert (await client.get("/api/admin/users", headers=victim_headers)).status_code == 200
    redis_server.stop()
    try:
        # The write succeeds (the database copy of the revocation is authoritative) ...
        r = await client.patch(
            f"/api/admin/users/{victim['id']}/status", headers=headers, json={"isActive": False}
        )
        assert r.status_code == 200, r.text
        # ... and every service's database fallback refuses the old token at once.
        r = await client.get("/api/admin/users", headers=victim_headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_INVALID"
        assert (await client.get("/api/admin/users", headers=headers)).status_code == 200
    finally:
        redis_server.start()
