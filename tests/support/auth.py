"""Helpers for the auth tests: a runtime (DB + Redis) and quick user/token helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from paysys.core.config import get_settings
from paysys.core.runtime import Runtime
from paysys.core.tokens import Clock, TokenCodec, VerifiedTokens, now_ms

PASSWORD = "Correct-Horse-42"
OTHER_PASSWORD = "Battery-Staple-99"


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


@asynccontextmanager
async def runtime() -> AsyncIterator[Runtime]:
    rt = Runtime.create(get_settings())
    try:
        yield rt
    finally:
        await rt.close()


async def register(
    client: httpx.AsyncClient,
    email: str | None = None,
    password: str = PASSWORD,
    name: str = "Test User",
    role: str | None = None,
    **headers: str,
) -> dict[str, Any]:
    body: dict[str, Any] = {"email": email or unique_email(), "password": password, "name": name}
    if role is not None:
        body["role"] = role
    response = await client.post("/api/auth/register", json=body, headers=headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def login(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **headers: str
) -> httpx.Response:
    return await client.post(
        "/api/auth/login", json={"email": email, "password": password}, headers=headers
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class FakeClock:
    """An auth process's clock (epoch ms) that tests move by hand."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.now = now_ms() if start_ms is None else start_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


def use_clock(client: httpx.AsyncClient, clock: Clock) -> None:
    """Give an in-process auth app another clock (token issuance, lockout, quota)."""
    app: Any = client.app  # type: ignore[attr-defined]
    app.state.verified_tokens = VerifiedTokens(TokenCodec(app.state.settings, clock=clock))
    if getattr(app.state, "throttles", None) is not None:
        del app.state.throttles  # made again, with this clock, at the next request


async def admin_login(client: httpx.AsyncClient, prefix: str = "admin") -> tuple[str, str]:
    """A new ADMIN account (created in the database: nobody may register as one) signed in
    through `client` (the gateway or auth): its access token and user id."""
    from paysys.users import accounts

    email = unique_email(prefix)
    async with runtime() as rt, rt.sessionmaker() as session:
        user = await accounts.create_user(
            session, email=email, password=PASSWORD, name="Admin", role="ADMIN", via="admin"
        )
        await session.commit()
    response = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["accessToken"]), str(user.id)
