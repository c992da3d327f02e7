"""Avatar upload over real processes through the gateway (api-contracts §6, issue 17 item 3):
data URL → verified, re-encoded WebP in PostgreSQL → public GET with ETag/304; the refusals;
the 8 MiB body limit of the profile update only; the audit row; removal with the user."""

from __future__ import annotations

import asyncio
import io
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from PIL import Image
from sqlalchemy import delete, func, select

from paysys.profile.models import ProfileAvatar
from paysys.users import accounts
from paysys.users.models import User
from tests.support.auth import PASSWORD, admin_login, bearer, register, runtime, unique_email
from tests.support.images import data_url, encode, jpeg_with_gps, png
from tests.support.servers import Stack

MIB = 1024 * 1024
AVATAR_URL = re.compile(r"/api/profile/avatar/([0-9a-f-]{36})\?v=([0-9a-f]{32})")


async def _poll(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def _stored_avatars(user_id: str) -> int:
    async with runtime() as rt, rt.sessionmaker() as session:
        stmt = select(func.count()).where(ProfileAvatar.user_id == uuid.UUID(user_id))
        return int((await session.execute(stmt)).scalar_one())


def _webp(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    assert image.format == "WEBP"
    return image


def _refusal(r: httpx.Response, reason: str) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"].startswith("avatarUrl: ") and reason in error["message"], error


async def test_avatar_upload_round_trip(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as client:
        data = await register(client, name="Ava")
        user_id, headers = data["user"]["id"], bearer(data["accessToken"])
        avatar_path = f"/api/profile/avatar/{user_id}"
        assert (await client.get(avatar_path)).status_code == 404  # nothing uploaded yet

        r = await client.put(
            "/api/profile", json={"avatarUrl": data_url(png(1600, 900))}, headers=headers
        )
        assert r.status_code == 200, r.text
        match = AVATAR_URL.fullmatch(r.json()["data"]["avatarUrl"])
        assert match is not None and match.group(1) == user_id
        etag = match.group(2)

        # Public: no token. The gateway forwards it; headers as §6 says.
        got = await client.get(r.json()["data"]["avatarUrl"])
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "image/webp"
        assert got.headers["etag"] == f'"{etag}"'
        assert got.headers["cache-control"] == "public, max-age=86400"
        assert "default-src 'none'" in got.headers["content-security-policy"]
        assert got.headers["x-content-type-options"] == "nosniff"
        image = _webp(got.content)
        assert image.size == (512, 288)
        assert dict(image.getexif()) == {} and "exif" not in image.info

        same = await client.get(avatar_path, headers={"If-None-Match": f'"{etag}"'})
        assert same.status_code == 304 and same.content == b""
        assert same.headers["etag"] == f'"{etag}"'
        other = await client.get(avatar_path, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200 and other.content == got.content

        # The profile sent back as read leaves the avatar as it is; another path is refused.
        current = r.json()["data"]["avatarUrl"]
        r = await client.patch("/api/profile", json={"avatarUrl": current}, headers=headers)
        assert r.status_code == 200 and r.json()["data"]["avatarUrl"] == current
        foreign = f"/api/profile/avatar/{uuid.uuid4()}?v={etag}"
        _refusal(
            await client.patch("/api/profile", json={"avatarUrl": foreign}, headers=headers),
            "current avatar path",
        )

        # A JPEG with EXIF GPS: the stored WebP carries no metadata; the version changes.
        r = await client.patch(
            "/api/profile",
            json={"avatarUrl": data_url(jpeg_with_gps(), "image/jpeg")},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        replaced = AVATAR_URL.fullmatch(r.json()["data"]["avatarUrl"])
        assert replaced is not None and replaced.group(2) != etag
        stale = await client.get(avatar_path, headers={"If-None-Match": f'"{etag}"'})
        assert stale.status_code == 200
        image = _webp(stale.content)
        assert dict(image.getexif()) == {}
        assert not {"exif", "xmp", "icc_profile"} & set(image.info)
        assert b"Avatar Test Camera" not in stale.content

        # The change is in the audit trail as PROFILE_UPDATED.
        admin = bearer((await admin_login(client, "avatar-admin"))[0])

        async def audited() -> bool:
            logs = await client.get(
                "/api/admin/audit-logs",
                params={"action": "PROFILE_UPDATED", "resourceId": user_id},
                headers=admin,
            )
            assert logs.status_code == 200, logs.text
            rows: list[dict[str, Any]] = logs.json()["data"]["auditLogs"]
            uploads = [
                row
                for row in rows
                if row["details"]["changes"].get("avatarUrl")
                == {"cleared": False, "uploaded": True}
            ]
            return len(uploads) == 2

        await _poll(audited)

        # null removes the stored image too.
        r = await client.patch("/api/profile", json={"avatarUrl": None}, headers=headers)
        assert r.status_code == 200 and r.json()["data"]["avatarUrl"] is None
        gone = await client.get(avatar_path)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND"
        assert await _stored_avatars(user_id) == 0

        for bad in ("not-a-uuid", str(uuid.uuid4()), "12345"):
            r = await client.get(f"/api/profile/avatar/{bad}")
            assert r.status_code == 404, (bad, r.text)
            assert r.json()["success"] is False


async def test_avatar_refusals_and_body_limits(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as client:
        data = await register(client, name="Rex")
        headers = bearer(data["accessToken"])

        async def put(avatar: str) -> httpx.Response:
            return await client.put("/api/profile", json={"avatarUrl": avatar}, headers=headers)

        good = png(300, 300)
        svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
        _refusal(await put(data_url(svg, "image/svg+xml")), "image type must be png")
        _refusal(await put(data_url(b"plain text, not a picture")), "is not an image")
        _refusal(await put(data_url(good[: len(good) // 2])), "corrupt or truncated")
        _refusal(await put(data_url(jpeg_with_gps(64, 64))), "is JPEG, not the declared")
        _refusal(await put(data_url(good + b"<html></html>PK\x03\x04")), "data follows the end")
        five_plus = encode(Image.new("RGB", (8, 8)), "PNG") + b"\0" * (5 * MIB)
        _refusal(await put(data_url(five_plus)), "at most 5 MiB")
        assert (await client.get(f"/api/profile/avatar/{data['user']['id']}")).status_code == 404

        # A ~7 MiB body passes the profile route's 8 MiB limit (then the 5 MiB rule: 400) ...
        seven = '{"avatarUrl": "data:image/png;base64,' + "A" * (7 * MIB) + '"}'
        json_headers = {**headers, "content-type": "application/json"}
        for method in ("PUT", "PATCH"):
            r = await client.request(method, "/api/profile", content=seven, headers=json_headers)
            _refusal(r, "at most 5 MiB")
        # ... the same body anywhere else is over 1 MiB: 413.
        r = await client.put("/api/profile/preferences", content=seven, headers=json_headers)
        assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        assert r.json()["error"]["message"] == "Request body exceeds 1 MiB"
        # Over 8 MiB on the profile route: 413.
        nine = '{"avatarUrl": "' + "A" * (8 * MIB) + '"}'
        r = await client.put("/api/profile", content=nine, headers=json_headers)
        assert r.status_code == 413 and r.json()["error"]["message"] == "Request body exceeds 8 MiB"


async def test_deleting_the_user_deletes_the_avatar(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as client:
        data = await register(client, name="Del")
        user_id, headers = data["user"]["id"], bearer(data["accessToken"])
        r = await client.put(
            "/api/profile", json={"avatarUrl": data_url(png(64, 64))}, headers=headers
        )
        assert r.status_code == 200, r.text
        assert (await client.get(r.json()["data"]["avatarUrl"])).status_code == 200

        admin = bearer((await admin_login(client, "avatar-admin"))[0])
        assert (
            await client.delete(f"/api/admin/users/{user_id}", headers=admin)
        ).status_code == 204
        # Not served from the moment of deletion; the stored image goes with user.deleted.
        assert (await client.get(f"/api/profile/avatar/{user_id}")).status_code == 404

        async def erased() -> bool:
            return await _stored_avatars(user_id) == 0

        await _poll(erased)


async def test_avatar_row_cascades_with_the_user_row(stack: Stack) -> None:
    """Rows removed for good (not the API's soft delete) take their avatar along (FK cascade)."""
    async with runtime() as rt, rt.sessionmaker() as session:
        user = await accounts.create_user(
            session,
            email=unique_email("cascade"),
            password=PASSWORD,
            name="C",
            role="CUSTOMER",
            via="admin",
        )
        session.add(ProfileAvatar(user_id=user.id, image=b"webp", etag="0" * 32))
        await session.commit()
        assert await _stored_avatars(str(user.id)) == 1
        await session.execute(delete(User).where(User.id == user.id))
        await session.commit()
    assert await _stored_avatars(str(user.id)) == 0
