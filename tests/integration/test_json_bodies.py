"""Malformed JSON bodies to a JSON route of every service: 400 INVALID_JSON in the envelope.

One reader (`paysys.core.jsonbody`) parses every body in every service: the plain routes
(payments create, the PSP webhook, admin config) call it themselves, the ordinary FastAPI
routes get it through `core.jsonbody.JsonBodyRoute`. So the same bad body yields the same
answer everywhere, and never a 5xx (api-contracts §1.3).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.admin import admin_and_token, insert_user
from tests.support.auth import unique_email
from tests.support.payments import body, make_user, signed

DEEP = b"[" * 100_000  # far past the interpreter's recursion limit
DEEP_OBJECTS = b'{"a":' * 60_000
TOO_DEEP = b"[" * 200 + b"]" * 200  # well-formed, but deeper than any body may nest
MALFORMED: dict[str, bytes] = {
    "deep": DEEP,
    "deep-objects": DEEP_OBJECTS,
    "too-deep": TOO_DEEP,
    "duplicate-keys": b'{"name": "a", "name": "b"}',
    "invalid-utf8": b'{"name": "\xff\xfe"}',
    "utf16": '{"name": "x"}'.encode("utf-16"),
    "lone-surrogate": b'{"name": "\\ud800"}',
    "escaped-nul": b'{"name": "a\\u0000b"}',
    "raw-nul": b'{"name": "a\x00b"}',
    "huge-integer": b'{"name": 1' + b"0" * 5000 + b"}",
    "truncated": b'{"name": ',
}

# Not JSON either, but bodies that carry money are read in exact mode, which keeps these for
# the money rules to refuse with the field's name (VALIDATION_ERROR; test_payments_create).
NOT_NUMBERS: dict[str, bytes] = {
    "nan": b'{"name": NaN}',
    "infinity": b'{"name": -Infinity}',
    "float-overflow": b'{"name": 1e999}',
}

JSON = {"content-type": "application/json"}


def _problem(response: httpx.Response) -> str | None:
    """None when the response is 400 INVALID_JSON in the envelope, else what it was."""
    if response.status_code != 400:
        return f"{response.status_code} {response.text[:120]}"
    body = response.json()
    if body.get("success") is not False or body["error"]["code"] != "INVALID_JSON":
        return f"400 {body}"
    if body["error"]["requestId"] != response.headers["x-request-id"]:
        return "no request id"
    return None


async def _send_all(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    exact: bool = False,
) -> None:
    problems = {}
    cases = MALFORMED if exact else {**MALFORMED, **NOT_NUMBERS}
    for case, raw in cases.items():
        response = await client.request(
            method, url, content=raw, headers={**JSON, **(headers or {})}
        )
        problem = _problem(response)
        if problem:
            problems[case] = problem
    assert problems == {}, f"{method} {url}"


async def test_auth_routes(app_client: Any) -> None:
    client = await app_client("auth")
    for path in ("/api/auth/register", "/api/auth/login", "/api/auth/refresh"):
        await _send_all(client, "POST", path)
    register = await client.post(
        "/api/auth/register",
        json={"email": unique_email(), "password": "Correct-Horse-42", "name": "Json Test"},
    )
    token = register.json()["data"]["accessToken"]
    bearer = {"Authorization": f"Bearer {token}"}
    await _send_all(client, "PUT", "/api/auth/password", bearer)
    await _send_all(client, "POST", "/api/auth/logout", bearer)


async def test_payments_routes(app_client: Any) -> None:
    client = await app_client("payments")
    user, recipient = await make_user(), await make_user()
    await _send_all(client, "POST", "/api/payments", user.headers, exact=True)
    created = await client.post("/api/payments", json=body(recipient), headers=user.headers)
    assert created.status_code == 201, created.text
    pid = created.json()["data"]["id"]
    await _send_all(client, "PATCH", f"/api/payments/{pid}/status", user.headers)
    await _send_all(client, "POST", f"/api/payments/{pid}/cancel", user.headers)
    for case, raw in {**MALFORMED, **NOT_NUMBERS}.items():
        signed_raw, headers = signed(raw)
        response = await client.post(
            "/api/payments/webhooks/psp", content=signed_raw, headers=headers
        )
        assert _problem(response) is None, case


async def test_admin_routes(app_client: Any) -> None:
    client = await app_client("admin")
    _, headers = await admin_and_token()
    target = await insert_user()
    await _send_all(client, "PUT", "/api/admin/config", headers, exact=True)
    await _send_all(client, "PUT", "/api/admin/config/payment.maxAmount", headers, exact=True)
    await _send_all(client, "POST", "/api/admin/users", headers)
    await _send_all(client, "PATCH", f"/api/admin/users/{target['id']}", headers)
    await _send_all(client, "PATCH", f"/api/admin/users/{target['id']}/status", headers)


async def test_profile_routes(app_client: Any) -> None:
    client = await app_client("profile")
    user = await make_user()
    await _send_all(client, "PUT", "/api/profile", user.headers)
    await _send_all(client, "PATCH", "/api/profile/preferences", user.headers)


@pytest.mark.parametrize("path", ["/api/auth/login", "/api/auth/register"])
async def test_valid_json_failing_the_schema_is_a_validation_error(
    app_client: Any, path: str
) -> None:
    client = await app_client("auth")
    response = await client.post(path, content=b'{"email": 5, "password": "x"}', headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
