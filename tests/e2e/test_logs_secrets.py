"""No password or token ever reaches a log line, whatever the log level (real processes).

A journey that sends passwords and tokens every way a client can (bodies, Authorization,
query strings) through the gateway and to the auth service, with every process logging at
DEBUG (uvicorn included); then no log file may contain any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.auth import OTHER_PASSWORD, PASSWORD, bearer, unique_email
from tests.support.servers import Stack


async def test_no_secret_in_any_log_line(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(LOG_LEVEL="DEBUG", UVICORN_LOG_LEVEL="debug")
    stack.start()
    email = unique_email("logs")
    secrets: list[str] = [PASSWORD, OTHER_PASSWORD]
    async with (
        httpx.AsyncClient(base_url=stack.url("auth"), timeout=15) as auth,
        httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15) as gateway,
    ):
        body = {"email": email, "password": PASSWORD, "name": "Logs"}
        registered = (await auth.post("/api/auth/register", json=body)).json()["data"]
        secrets += [registered["accessToken"], registered["refreshToken"]]
        wrong = await auth.post(
            "/api/auth/login", json={"email": email, "password": "Wrong-" + PASSWORD}
        )
        assert wrong.status_code == 401
        login = await auth.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        tokens = login.json()["data"]
        secrets += [tokens["accessToken"], tokens["refreshToken"]]
        refreshed = (
            await auth.post("/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
        ).json()["data"]
        access = refreshed["accessToken"]
        secrets += [access, refreshed["refreshToken"]]
        assert (await gateway.get("/api/auth/me", headers=bearer(access))).status_code == 200
        assert (await gateway.get("/api/payments", headers=bearer(access))).status_code == 200
        # secrets in query strings (as EventSource clients send `?token=`) and a forged token
        await gateway.get(
            f"/api/payments?token={access}&password={PASSWORD}", headers=bearer(access)
        )
        await gateway.get(f"/api/auth/me?token={access}")
        forged = access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB")
        assert (await gateway.get("/api/auth/me", headers=bearer(forged))).status_code == 401
        secrets.append(forged)
        bad_change = await gateway.post(
            "/api/auth/password",
            headers=bearer(access),
            json={"currentPassword": "Wrong-" + PASSWORD, "newPassword": OTHER_PASSWORD},
        )
        assert bad_change.status_code == 401
        changed = await gateway.post(
            "/api/auth/password",
            headers=bearer(access),
            json={"currentPassword": PASSWORD, "newPassword": OTHER_PASSWORD},
        )
        assert changed.status_code == 200, changed.text
    stack.stop()
    logs = {
        path.name: path.read_text(errors="replace") for path in Path(stack.logdir).glob("*.log")
    }
    assert sum("request" in text for text in logs.values()) >= 2  # the processes did log
    for name, text in logs.items():
        for secret in secrets:
            assert secret not in text, f"{name} logs a secret"
        assert "token=eyJ" not in text
