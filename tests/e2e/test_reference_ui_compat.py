"""Issue 17, items 1 and 2, over real processes through the gateway, read the way the
reference React frontend reads them (api-contracts revision 2 §5, §6): the profile's `phone`
after a reload, the admin "Audit Logs" tab (`data.data`, `userId`, `userName`, `userEmail`,
`ipAddress`, `timestamp`, the `userId` filter), the actions as a bare array, and the
dashboard's recent activity (the same list, first page).

Registration and login go to the auth service directly (the gateway's per-IP auth rate limit
is shared by the whole e2e run).
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.admin import poll
from tests.support.auth import admin_login, bearer, register, unique_email
from tests.support.servers import Stack

COMPAT = {"userId", "userName", "userEmail", "ipAddress", "timestamp"}


async def test_phone_and_audit_logs_as_the_reference_ui_reads_them(stack: Stack) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth,
        httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15) as api,
    ):
        admin = bearer((await admin_login(auth, "ui-admin"))[0])
        user = await register(auth, email=unique_email("ui-user"), name="Pat Phone")
        user_id, email = user["user"]["id"], user["user"]["email"]
        headers = bearer(user["accessToken"])

        # Profile page: save a phone number, reload, the field shows it (§6).
        r = await api.put("/api/profile", headers=headers, json={"phoneNumber": "+44 20 7183 8750"})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["phone"] == "+442071838750"
        for _ in range(2):  # the first read fills the Redis copy, the second is served from it
            r = await api.get("/api/profile", headers=headers)
            assert r.status_code == 200, r.text
            profile = r.json()["data"]
            assert profile["phone"] == profile["phoneNumber"] == "+442071838750"
        r = await api.get(f"/api/admin/users/{user_id}", headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["profile"]["phone"] == "+442071838750"

        # Admin → Audit Logs, filtered by user the way the UI does (`userId`).
        async def rows_of_user() -> list[dict[str, Any]] | None:
            r = await api.get(
                "/api/admin/audit-logs",
                headers=admin,
                params={"page": 1, "limit": 10, "userId": user_id},
            )
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            assert data["data"] == data["auditLogs"]
            actions = {row["action"] for row in data["data"]}
            return data["data"] if "PROFILE_UPDATED" in actions else None

        rows = await poll(rows_of_user, timeout=30)
        assert {row["userId"] for row in rows} == {user_id}
        for row in rows:
            assert set(row) >= COMPAT
            assert (row["userName"], row["userEmail"]) == ("Pat Phone", email)
            assert row["timestamp"] == row["createdAt"] and row["ipAddress"] == row["ip"]
        assert {"USER_REGISTERED", "PROFILE_UPDATED"} <= {row["action"] for row in rows}

        # The action filter's options: a bare array.
        r = await api.get("/api/admin/audit-logs/actions", headers=admin)
        assert r.status_code == 200, r.text
        actions = r.json()["data"]
        assert isinstance(actions, list) and "PROFILE_UPDATED" in actions
        assert all(isinstance(action, str) for action in actions)

        # Dashboard "recent activity": the newest rows of the same list, same names.
        r = await api.get("/api/admin/audit-logs", headers=admin, params={"page": 1, "limit": 5})
        assert r.status_code == 200, r.text
        recent = r.json()["data"]["data"]
        assert 0 < len(recent) <= 5 and all(set(row) >= COMPAT for row in recent)
        stamps = [row["timestamp"] for row in recent]
        assert stamps == sorted(stamps, reverse=True)
