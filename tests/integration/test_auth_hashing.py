"""No database connection is held while argon2 runs, anywhere (api-contracts §3): every hash and
verification is watched against the pool's checkouts of the task that runs it. And a burst of
correct-password changes on a pool of two connections does not starve other users."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import argon2
import httpx
import pytest
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine

from paysys.auth.seed import seed
from paysys.core import passwords
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

NEW_PASSWORD = "Brand-New-Pass-7"


class ConnectionHolders:
    """Which task holds which pooled connection (the pools' checkout and checkin events)."""

    def __init__(self) -> None:
        self.holders: dict[int, asyncio.Task[Any] | None] = {}

    def watch(self, engine: AsyncEngine) -> None:
        pool = engine.sync_engine.pool
        event.listen(pool, "checkout", self._checkout)
        event.listen(pool, "checkin", self._checkin)

    def _checkout(self, _dbapi: Any, record: Any, _proxy: Any) -> None:
        self.holders[id(record)] = asyncio.current_task()

    def _checkin(self, _dbapi: Any, record: Any) -> None:
        self.holders.pop(id(record), None)

    def held_by_current_task(self) -> int:
        me = asyncio.current_task()
        return sum(1 for task in self.holders.values() if task is me)


@pytest.fixture
def hashing(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ConnectionHolders, list]]:
    """Every argon2 call (hash, verify, the unknown-email dummy verify) records how many
    connections its own task held at that moment."""
    holders = ConnectionHolders()
    calls: list[tuple[str, int]] = []
    original: Callable[..., Any] = passwords._in_pool

    async def spy(fn: Callable[..., Any], *args: Any, **lane: Any) -> Any:
        calls.append((getattr(fn, "__name__", repr(fn)), holders.held_by_current_task()))
        return await original(fn, *args, **lane)

    monkeypatch.setattr(passwords, "_in_pool", spy)
    yield holders, calls


def _engine(client: httpx.AsyncClient) -> AsyncEngine:
    engine: AsyncEngine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    return engine


async def test_no_connection_is_held_while_hashing(
    app_client: Any, hashing: tuple[ConnectionHolders, list]
) -> None:
    holders, calls = hashing
    auth = await app_client("auth")
    admin_app = await app_client("admin")
    holders.watch(_engine(auth))
    holders.watch(_engine(admin_app))
    async with runtime() as rt:
        holders.watch(rt.engine)
        async with rt.sessionmaker() as session:
            await seed(session)  # 3 users: one short transaction each, hashed outside
        assert len(calls) == 3
        email = unique_email()
        data = await register(auth, email=email)
        assert (await login(auth, email)).status_code == 200
        assert (await login(auth, email, OTHER_PASSWORD)).status_code == 401
        assert (await login(auth, unique_email())).status_code == 401  # the dummy verify
        weak = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024).hash(PASSWORD)
        async with rt.sessionmaker() as session:
            await session.execute(
                update(User).where(User.email == email).values(password_hash=weak)
            )
            await session.commit()
        upgraded = await login(auth, email)  # verify, then the upgraded hash
        assert upgraded.status_code == 200
        token = upgraded.json()["data"]["accessToken"]
        for current in (OTHER_PASSWORD, PASSWORD):  # a wrong current password, then the change
            await auth.post(
                "/api/auth/password",
                json={"currentPassword": current, "newPassword": NEW_PASSWORD},
                headers=bearer(token),
            )
        assert (await login(auth, email, NEW_PASSWORD)).status_code == 200
        admin_token = (await login(auth, "admin@example.com", "TestPassword123!")).json()["data"][
            "accessToken"
        ]
        created = await admin_app.post(
            "/api/admin/users",
            json={"email": unique_email(), "password": PASSWORD, "name": "N", "role": "VENDOR"},
            headers=bearer(admin_token),
        )
        assert created.status_code == 201, created.text
        taken = await admin_app.post(
            "/api/admin/users",
            json={"email": email, "password": PASSWORD, "name": "N", "role": "VENDOR"},
            headers=bearer(admin_token),
        )
        assert taken.status_code == 409
    assert data["user"]["email"] == email
    names = [name for name, _ in calls]
    # seed 3, register 1, logins 1 + 1 + 1, upgrade 2, change 1 + 2, login 1, admin login 1,
    # admin creates 2 (the taken email is hashed too: its timing tells nothing)
    assert len(calls) == 16, names
    assert names.count("hash") == 8 and names.count("_verify") == 8
    assert [held for _, held in calls] == [0] * len(calls)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]


async def test_password_change_burst_does_not_starve_other_users(
    app_client: Any, hashing: tuple[ConnectionHolders, list]
) -> None:
    """DB_POOL_SIZE=2, DB_MAX_OVERFLOW=0: 30 users change their
    password at once (correct current passwords) while 10 other users log in and 20 other
    requests read `/me`. Every request succeeds; no hash runs while its task holds a connection;
    the other users' reads and logins are answered while the burst is still being hashed.
    (Before, each change held one of the two connections through both of its hashes, so every
    other request queued for a connection behind the burst: /me p99 ≈ the whole burst.)"""
    holders, calls = hashing
    auth = await app_client("auth", db_pool_size=2, db_max_overflow=0)
    holders.watch(_engine(auth))
    changers = [await register(auth) for _ in range(30)]
    others = [await register(auth) for _ in range(10)]
    calls.clear()

    failures: list[str] = []

    async def timed(send: Callable[[], Any]) -> tuple[int, float]:
        started = time.perf_counter()
        response = await send()
        if response.status_code != 200:
            failures.append(response.text)
        return response.status_code, time.perf_counter() - started

    def change(user: dict[str, Any]) -> Callable[[], Any]:
        return lambda: auth.post(
            "/api/auth/password",
            json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD},
            headers=bearer(user["accessToken"]),
        )

    def sign_in(user: dict[str, Any]) -> Callable[[], Any]:
        return lambda: login(auth, user["user"]["email"])

    def read_me(user: dict[str, Any]) -> Callable[[], Any]:
        return lambda: auth.get("/api/auth/me", headers=bearer(user["accessToken"]))

    quiet = await asyncio.gather(*(timed(sign_in(user)) for user in others))
    quiet_p99 = _p99([seconds for _, seconds in quiet])
    started = time.perf_counter()
    results = await asyncio.gather(
        *(timed(change(user)) for user in changers),
        *(timed(sign_in(user)) for user in others),
        *(timed(read_me(others[i % 10])) for i in range(20)),
    )
    burst = time.perf_counter() - started
    changes, logins, reads = results[:30], results[30:40], results[40:]
    assert [code for code, _ in results] == [200] * 60, failures
    assert len(calls) == 10 + 30 * 2 + 10 and {held for _, held in calls} == {0}
    read_p99 = _p99([seconds for _, seconds in reads])
    login_p99 = _p99([seconds for _, seconds in logins])
    detail = (
        f"burst {burst:.2f}s, /me p99 {read_p99:.3f}s, other logins p99 {login_p99:.2f}s"
        f" (quiet {quiet_p99:.2f}s)"
    )
    # Not queued behind the burst: reads need no hash, and logins keep a hashing thread of their
    # own (account changes may use only half of them: core.passwords).
    assert read_p99 < burst / 3, detail
    assert login_p99 < burst / 2, detail
    assert max(seconds for _, seconds in changes) <= burst
