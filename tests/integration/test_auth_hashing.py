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
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from paysys.auth.seed import seed
from paysys.auth.throttle import CHANGES_KEY
from paysys.core import passwords
from paysys.core.events.models import OutboxEvent
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


# --- what may change while a password is being hashed ------------------------------------


def _meanwhile(monkeypatch: pytest.MonkeyPatch, change: Callable[[], Any]) -> list[int]:
    """Run `change` (another request's effect) once, between a verification's read and its
    write: while the hash is computed and no connection is held."""
    from paysys.auth import service

    original = service.verify_password
    calls: list[int] = []

    async def verify(stored_hash: str, password: str, **lane: Any) -> tuple[bool, bool]:
        calls.append(1)
        result = await original(stored_hash, password, **lane)
        if len(calls) == 1:
            await change()
        return result

    monkeypatch.setattr(service, "verify_password", verify)
    return calls


async def _set(email: str, **values: Any) -> None:
    async with runtime() as rt, rt.sessionmaker() as session:
        await session.execute(update(User).where(User.email == email).values(**values))
        await session.commit()


async def test_login_verifies_again_when_another_login_upgraded_the_hash(
    app_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = await app_client("auth")
    email = unique_email()
    await register(auth, email=email)
    other_hash = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024).hash(PASSWORD)
    calls = _meanwhile(monkeypatch, lambda: _set(email, password_hash=other_hash))
    response = await login(auth, email)
    assert response.status_code == 200, response.text
    assert len(calls) == 2  # the stored hash changed: verified again against the new one


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"is_active": False}, "inactive"),
        ({"deleted_at": func.now()}, "unknown_email"),
        ({"password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA"}, "wrong_password"),
    ],
)
async def test_login_fails_when_the_account_changed_meanwhile(
    app_client: Any, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], reason: str
) -> None:
    auth = await app_client("auth")
    email = unique_email()
    await register(auth, email=email)
    _meanwhile(monkeypatch, lambda: _set(email, **change))
    response = await login(auth, email)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_CREDENTIALS"
    async with runtime() as rt, rt.sessionmaker() as session:
        reasons = (
            await session.scalars(
                select(OutboxEvent.payload["data"]["reason"].astext).where(
                    OutboxEvent.type == "user.login_failed"
                )
            )
        ).all()
    assert reasons == [reason]


async def test_password_change_loses_to_a_concurrent_change(
    app_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The current password was right when verified, but another change replaced it before
    this one could write: 401, nothing stored, the quota slot given back."""
    auth = await app_client("auth")
    email = unique_email()
    data = await register(auth, email=email)
    winner = argon2.PasswordHasher().hash("Someone-Else-9!")
    _meanwhile(monkeypatch, lambda: _set(email, password_hash=winner))
    response = await auth.post(
        "/api/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD},
        headers=bearer(data["accessToken"]),
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_CREDENTIALS"
    async with runtime() as rt, rt.sessionmaker() as session:
        stored = await session.scalar(select(User.password_hash).where(User.email == email))
        assert stored == winner
        assert await rt.redis.zcard(CHANGES_KEY.format(data["user"]["id"])) == 0
