"""Avatar upload in-process (api-contracts §6): what the e2e test cannot see from outside —
no database connection is held while the image is decoded, the stored row follows `avatarUrl`,
the event carries no image and the route is public on the service itself too."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from paysys.profile import avatars
from paysys.profile.models import ProfileAvatar
from tests.support.images import data_url, png
from tests.support.profile import TestUser, client_user, outbox_events

pytestmark = pytest.mark.usefixtures("clean_state")


async def _setup(app_client: Any) -> tuple[httpx.AsyncClient, TestUser]:
    client = await app_client("profile")
    return client, await client_user(client)


async def _stored(client: httpx.AsyncClient, user: TestUser) -> list[str]:
    async with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        rows = await session.execute(
            select(ProfileAvatar.etag).where(ProfileAvatar.user_id == user.id)
        )
        return list(rows.scalars())


async def test_decoding_holds_no_database_connection(
    app_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, user = await _setup(app_client)
    pool = client.app.state.runtime.engine.pool  # type: ignore[attr-defined]
    checked_out: list[int] = []
    real = avatars.process

    async def spy(upload: avatars.Upload) -> avatars.Avatar:
        checked_out.append(pool.checkedout())
        return await real(upload)

    monkeypatch.setattr(avatars, "process", spy)
    r = await client.put(
        "/api/profile", json={"avatarUrl": data_url(png(64, 64))}, headers=user.headers
    )
    assert r.status_code == 200, r.text
    assert checked_out == [0]  # background workers are off: nothing else holds one


async def test_stored_image_follows_avatar_url(app_client: Any) -> None:
    client, user = await _setup(app_client)
    r = await client.put(
        "/api/profile", json={"avatarUrl": data_url(png(64, 64))}, headers=user.headers
    )
    assert r.status_code == 200, r.text
    path = r.json()["data"]["avatarUrl"]
    (etag,) = await _stored(client, user)
    assert path == f"/api/profile/avatar/{user.id}?v={etag}"
    # Public on the service itself as well (no Authorization header).
    got = await client.get(path)
    assert got.status_code == 200 and got.headers["content-type"] == "image/webp"
    assert (await client.get(path, headers={"If-None-Match": "*"})).status_code == 304
    weak = await client.get(path, headers={"If-None-Match": f'"x", W/"{etag}"'})
    assert weak.status_code == 304

    # Only the caller's own current path is accepted back.
    foreign = path.replace(str(user.id), "0b6f4f1e-8d7e-4c1a-9a57-3f3c8e1f2a10")
    r = await client.patch("/api/profile", json={"avatarUrl": foreign}, headers=user.headers)
    assert r.status_code == 400 and r.json()["error"]["details"][0]["field"] == "avatarUrl"
    r = await client.patch("/api/profile", json={"avatarUrl": path}, headers=user.headers)
    assert r.status_code == 200 and r.json()["data"]["avatarUrl"] == path

    # The same image again: same version, no change, no event.
    again = await client.patch(
        "/api/profile", json={"avatarUrl": data_url(png(64, 64))}, headers=user.headers
    )
    assert again.json()["data"]["avatarUrl"] == path
    events = await outbox_events(client.app.state.sessionmaker)  # type: ignore[attr-defined]
    mine = [e for e in events if e["data"]["userId"] == str(user.id)]
    assert [e["data"]["changes"] for e in mine] == [
        {"avatarUrl": {"cleared": False, "uploaded": True}}
    ]
    assert "base64" not in str(mine) and etag not in str(mine)

    # An http(s) URL replaces the upload: the stored image is gone, not left public.
    r = await client.patch(
        "/api/profile", json={"avatarUrl": "https://cdn.example.com/a.png"}, headers=user.headers
    )
    assert r.json()["data"]["avatarUrl"] == "https://cdn.example.com/a.png"
    assert await _stored(client, user) == []
    assert (await client.get(path)).status_code == 404
