"""Profile over real processes through the gateway: the registration race, updates, the
consumers reacting to admin's user.updated and user.deleted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import select

from paysys.profile.models import Profile
from tests.support.auth import PASSWORD, admin_login, bearer, runtime, unique_email
from tests.support.servers import Stack


async def _poll(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def _profiles(user_id: str) -> list[Profile]:
    async with runtime() as rt, rt.sessionmaker() as session:
        rows = await session.execute(select(Profile).where(Profile.user_id == uuid.UUID(user_id)))
        return list(rows.scalars())


async def test_profile_journey_through_gateway(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15) as client:
        r = await client.post(
            "/api/auth/register",
            json={"email": unique_email("journey"), "password": PASSWORD, "name": "Jo"},
        )
        assert r.status_code == 201, r.text
        user_id = r.json()["data"]["user"]["id"]
        headers = bearer(r.json()["data"]["accessToken"])
        # Race the user.created consumer with several first GETs: one row whoever wins.
        gets = await asyncio.gather(
            *(client.get("/api/profile", headers=headers) for _ in range(6))
        )
        assert {g.status_code for g in gets} == {200}
        assert len({g.json()["data"]["id"] for g in gets}) == 1
        assert len(await _profiles(user_id)) == 1

        r = await client.patch(
            "/api/profile",
            json={"phoneNumber": "+44 20 7183 8750", "bio": "hello", "avatarUrl": None},
            headers=headers,
        )
        assert r.status_code == 200 and r.json()["data"]["phoneNumber"] == "+442071838750"
        r = await client.put(
            "/api/profile/preferences", json={"notifications": {"push": True}}, headers=headers
        )
        assert r.json()["data"]["notifications"] == {"email": True, "push": True, "sms": False}

        admin = bearer((await admin_login(client, "profile-admin"))[0])
        r = await client.patch(
            f"/api/admin/users/{user_id}", json={"name": "Joanna"}, headers=admin
        )
        assert r.status_code == 200, r.text

        async def renamed() -> bool:
            got = await client.get("/api/profile", headers=headers)
            return bool(got.json()["data"]["user"]["name"] == "Joanna")

        await _poll(renamed)  # the cached copy was dropped by the user.updated consumer

        r = await client.delete(f"/api/admin/users/{user_id}", headers=admin)
        assert r.status_code == 204, r.text
        assert (await client.get("/api/profile", headers=headers)).status_code == 401

        async def erased() -> bool:
            (row,) = await _profiles(user_id)
            return row.personal_data_removed_at is not None

        await _poll(erased)
        (row,) = await _profiles(user_id)
        assert (row.phone_number, row.address, row.avatar_url, row.bio) == (None,) * 4
        assert row.preferences == {}
