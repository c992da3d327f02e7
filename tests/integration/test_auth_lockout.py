"""Lockout per account and client address, the per-account ceiling and the password-change
quota (api-contracts §3), in-process against real Redis and PostgreSQL.

The auth app trusts 127.0.0.1 (the in-process peer plays the gateway), so `X-Forwarded-For`
names the client, as it does behind the real gateway (tests/e2e/test_auth_lockout.py). The Redis
Lua script and the PostgreSQL fallback are both held to the pure rules of paysys.auth.lockout
on the same random scenarios.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from paysys.auth import lockout
from paysys.auth.lockout import Policy, Verdict
from paysys.auth.throttle import CHANGES_KEY, FAILURES_KEY, Throttles, account_key
from paysys.core.redis import create_redis
from paysys.core.redis_outage import RedisOutage
from paysys.core.tokens import now_ms
from tests.support.auth import (
    OTHER_PASSWORD,
    PASSWORD,
    FakeClock,
    bearer,
    login,
    register,
    runtime,
    unique_email,
    use_clock,
)
from tests.support.servers import RedisServer, free_port

pytestmark = pytest.mark.usefixtures("clean_state")

NEW_PASSWORD = "Brand-New-Pass-7"


async def _auth(app_client: Any, **overrides: Any) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await app_client("auth", trusted_proxies=["127.0.0.1"], **overrides)
    return client


def via(ip: str) -> dict[str, str]:
    """A request the trusted proxy (the gateway) forwarded for client `ip`."""
    return {"X-Forwarded-For": ip}


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _sessions_ips(client: httpx.AsyncClient, token: str) -> list[str]:
    response = await client.get("/api/auth/sessions", headers=bearer(token))
    return sorted(s["ip"] for s in response.json()["data"]["sessions"])


# --- per address -------------------------------------------------------------------------


async def test_a_strangers_failures_lock_only_their_address(app_client: Any) -> None:
    client = await _auth(app_client)
    email = unique_email()
    await register(client, email=email, **via("198.51.100.7"))
    stranger, owner = via("203.0.113.5"), via("198.51.100.7")
    codes = [(await login(client, email, OTHER_PASSWORD, **stranger)).status_code for _ in range(8)]
    assert codes == [401] * 5 + [423] * 3
    locked = await login(client, email, PASSWORD, **stranger)  # the right one waits too
    assert locked.status_code == 423 and _code(locked) == "ACCOUNT_LOCKED"
    assert 1 <= locked.json()["error"]["details"]["retryAfter"] <= 60
    mine = await login(client, email, PASSWORD, **owner)
    assert mine.status_code == 200, mine.text
    token = mine.json()["data"]["accessToken"]
    assert await _sessions_ips(client, token) == ["198.51.100.7", "198.51.100.7"]
    # The owner's success forgets the owner's count only: the stranger is still locked.
    assert (await login(client, email, PASSWORD, **stranger)).status_code == 423


async def test_ipv6_clients_count_per_slash_64(app_client: Any) -> None:
    client = await _auth(app_client)
    email = unique_email()
    await register(client, email=email)
    for host in range(1, 6):  # five addresses, one /64
        wrong = await login(client, email, OTHER_PASSWORD, **via(f"2001:db8:1:2::{host}"))
        assert wrong.status_code == 401
    same_net = await login(client, email, PASSWORD, **via("2001:db8:1:2:ffff::1"))
    assert same_net.status_code == 423
    other_net = await login(client, email, PASSWORD, **via("2001:db8:1:3::1"))
    assert other_net.status_code == 200


async def test_account_ceiling_across_addresses(
    app_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ceiling of 20 (the default 100 runs in tests/e2e/test_auth_lockout.py): 20 failures in
    an hour from 5 addresses (4 each: none locked on its own) → 423 from every address, the
    owner's too, until the hour's count falls; the crossing is logged once
    (`auth.account_under_attack`, with the user id, never the password) and counted."""
    client = await _auth(app_client, lockout_account_hourly_max=20)
    clock = FakeClock()
    use_clock(client, clock)
    email = unique_email()
    user = await register(client, email=email)
    before = _metric("paysys_auth_account_under_attack_total")
    locked_before = _metric("paysys_auth_login_locked_total", scope="account")
    guess = "Guess-Number-0001!"
    for i in range(20):
        response = await login(client, email, guess, **via(f"192.0.2.{i // 4 + 1}"))
        assert response.status_code == 401, (i, response.text)
        clock.advance(1)
    for ip in ("192.0.2.1", "192.0.2.200", "198.51.100.7"):
        refused = await login(client, email, PASSWORD, **via(ip))
        assert refused.status_code == 423 and _code(refused) == "ACCOUNT_LOCKED"
        # the first failure leaves the hour 3600 s after it was made
        assert refused.json()["error"]["details"]["retryAfter"] == 3600 - 20
    assert _metric("paysys_auth_account_under_attack_total") == before + 1
    assert _metric("paysys_auth_login_locked_total", scope="account") == locked_before + 3
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "auth.account_under_attack" in line]
    assert len(warnings) == 1, err[-2000:]
    assert user["user"]["id"] in warnings[0] and "192.0.2.5" in warnings[0]
    assert guess not in err and PASSWORD not in err
    clock.advance(3600 - 20)
    assert (await login(client, email, PASSWORD, **via("198.51.100.7"))).status_code == 200


async def test_unknown_emails_meet_the_same_ceiling(app_client: Any) -> None:
    client = await _auth(app_client, lockout_account_hourly_max=6)
    ghost = unique_email()
    codes = [
        (await login(client, ghost, PASSWORD, **via(f"192.0.2.{i}"))).status_code
        for i in range(1, 8)
    ]
    assert codes == [401] * 6 + [423]


# --- races -------------------------------------------------------------------------------


async def test_parallel_guesses_from_one_address_verify_at_most_five(app_client: Any) -> None:
    client = await _auth(app_client)
    email = unique_email()
    await register(client, email=email)
    responses = await asyncio.gather(
        *(login(client, email, f"Wrong-guess-{i:04d}", **via("203.0.113.9")) for i in range(16))
    )
    assert sorted(r.status_code for r in responses) == [401] * 5 + [423] * 11
    async with runtime() as rt:
        assert await rt.redis.zcard(FAILURES_KEY.format(account_key(email))) == 5


async def test_redis_down_lockout_continues_in_postgresql(
    app_client: Any, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RedisOutage, "RETRY_AFTER", 0.0)  # try Redis at every attempt
    client = await _auth(app_client)
    email = unique_email()
    await register(client, email=email)
    fallback_before = _metric("paysys_auth_throttle_fallback_total")
    redis_server.stop()
    try:
        responses = await asyncio.gather(
            *(login(client, email, f"Wrong-guess-{i:04d}", **via("203.0.113.9")) for i in range(12))
        )
        assert sorted(r.status_code for r in responses) == [401] * 5 + [423] * 7
        assert (await login(client, email, PASSWORD, **via("203.0.113.9"))).status_code == 423
        owner = await login(client, email, PASSWORD, **via("198.51.100.7"))
        assert owner.status_code == 200, owner.text
    finally:
        redis_server.start()
    assert _metric("paysys_auth_throttle_fallback_total") >= fallback_before + 14
    # Redis is back: counting returns to it.
    again = await login(client, email, OTHER_PASSWORD, **via("198.51.100.7"))
    assert again.status_code == 401
    async with runtime() as rt:
        assert await rt.redis.zcard(FAILURES_KEY.format(account_key(email))) == 1


# --- the Lua script, the PostgreSQL fallback and the pure rules agree ---------------------


class Reference:
    """The pure rules with the stores' bookkeeping (paysys.auth.lockout)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.states: dict[str, lockout.AddressState] = {}
        self.failures: list[int] = []

    def attempt(self, client: str, now: int, right: bool) -> Verdict:
        verdict, state = lockout.attempt(self.states.get(client), self.failures, now, self.policy)
        if verdict.allowed:
            assert state is not None
            if right:
                self.states.pop(client, None)
            else:
                self.states[client] = state
                self.failures.append(now)
        return verdict


async def _run(
    throttles: Throttles, clock: FakeClock, steps: list[tuple[str, int, bool]], store: str
) -> list[Verdict]:
    email = unique_email("parity")
    verdicts = []
    for client, advance_ms, right in steps:
        clock.now += advance_ms
        attempt = await throttles.begin_login(email, client)
        assert attempt.store == store
        if attempt.verdict.allowed and right:
            await throttles.login_succeeded(attempt)
        verdicts.append(attempt.verdict)
    return verdicts


def _scenario(seed: int) -> list[tuple[str, int, bool]]:
    """Attempts from three addresses, mostly quick (locks), now and then long pauses (locks
    end, the hour slides), now and then the right password."""
    rng = random.Random(seed)
    advances = [0, 1, 999, 1000, 5_000, 20_001, 61_000, 600_000, 1_800_000]
    weights = [4, 2, 2, 2, 4, 2, 2, 1, 1]
    return [
        (
            rng.choice(["10.0.0.1", "10.0.0.2", "2001:db8::/64"]),
            rng.choices(advances, weights)[0],
            rng.random() < 0.15,
        )
        for _ in range(150)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_redis_and_postgresql_stores_follow_the_pure_rules(seed: int) -> None:
    policy = Policy(
        threshold=3, window_ms=60_000, base_ms=20_000, max_ms=90_000, account_hourly_max=20
    )
    steps = _scenario(seed)
    start = 1_767_225_600_000 + seed * 10_000_000
    reference = Reference(policy)
    expected, now = [], start
    for client, advance_ms, right in steps:
        now += advance_ms
        expected.append(reference.attempt(client, now, right))
    assert {v.scope for v in expected} >= {None, "address", "account"}  # the scenario bites
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens: PostgreSQL
    async with runtime() as rt:
        for redis, store in ((rt.redis, "redis"), (dead, "db")):
            clock = FakeClock(start)
            throttles = Throttles(
                redis, rt.sessionmaker, policy, change_max=5, change_window_ms=1, clock=clock
            )
            got = await _run(throttles, clock, steps, store)
            assert got == expected, store
    await dead.aclose()


async def test_change_quota_in_redis_and_postgresql() -> None:
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    async with runtime() as rt:
        for redis in (rt.redis, dead):
            clock = FakeClock()
            throttles = Throttles(
                redis, rt.sessionmaker, Policy(), change_max=2, change_window_ms=60_000, clock=clock
            )
            user = uuid.uuid4()
            first = await throttles.begin_change(user)
            clock.advance(10)
            second = await throttles.begin_change(user)
            refused = await throttles.begin_change(user)
            assert first.allowed and second.allowed and not refused.allowed
            assert refused.retry_after == 50
            await throttles.release_change(refused)  # nothing to give back
            await throttles.release_change(second)
            assert (await throttles.begin_change(user)).allowed
            assert (await throttles.begin_change(uuid.uuid4())).allowed  # per user
            clock.advance(50)
            assert (await throttles.begin_change(user)).allowed  # the first one left
    await dead.aclose()


# --- password change ---------------------------------------------------------------------


async def test_password_changes_are_limited_per_user(app_client: Any) -> None:
    client = await _auth(app_client, jwt_access_expiry="2h")
    clock = FakeClock(now_ms() - 3_600_000)  # tokens stay valid while the clock moves on
    use_clock(client, clock)
    email = unique_email()
    token = (await register(client, email=email))["accessToken"]
    passwords = [PASSWORD, NEW_PASSWORD]
    for i in range(5):
        body = {"currentPassword": passwords[i % 2], "newPassword": passwords[(i + 1) % 2]}
        changed = await client.post("/api/auth/password", json=body, headers=bearer(token))
        assert changed.status_code == 200, (i, changed.text)
        clock.advance(60)
        token = (await login(client, email, passwords[(i + 1) % 2])).json()["data"]["accessToken"]
    body = {"currentPassword": NEW_PASSWORD, "newPassword": PASSWORD}
    limited = await client.post("/api/auth/password", json=body, headers=bearer(token))
    assert limited.status_code == 429 and _code(limited) == "RATE_LIMIT_EXCEEDED"
    assert limited.headers["retry-after"] == str(15 * 60 - 5 * 60)
    assert limited.json()["error"]["details"] == {"retryAfter": 600}
    # Refused before anything was checked: the password is unchanged, the token still works.
    assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 200
    clock.advance(600)
    again = await client.put("/api/auth/password", json=body, headers=bearer(token))
    assert again.status_code == 200, again.text


async def test_wrong_current_password_counts_as_a_failed_login_of_that_address(
    app_client: Any,
) -> None:
    client = await _auth(app_client)
    email = unique_email()
    user = await register(client, email=email)
    token = user["accessToken"]
    thief, owner = via("203.0.113.66"), via("198.51.100.7")
    body = {"currentPassword": OTHER_PASSWORD, "newPassword": NEW_PASSWORD}
    codes = [
        (
            await client.post("/api/auth/password", json=body, headers={**bearer(token), **thief})
        ).status_code
        for _ in range(7)
    ]
    assert codes == [401] * 5 + [423] * 2
    # The same counter as logins: that address cannot log in either; the owner can.
    assert (await login(client, email, PASSWORD, **thief)).status_code == 423
    assert (await login(client, email, PASSWORD, **owner)).status_code == 200
    # Wrong and refused attempts took no slot of the change quota: five changes remain.
    body = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    ok = await client.post("/api/auth/password", json=body, headers={**bearer(token), **owner})
    assert ok.status_code == 200, ok.text
    assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 401
    async with runtime() as rt:
        assert await rt.redis.zcard(CHANGES_KEY.format(user["user"]["id"])) == 1
