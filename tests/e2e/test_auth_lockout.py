"""Lockout per account and client address over real processes, through the gateway.

Each client has its own source address (127.0.0.x: Linux routes all of 127/8 to loopback, so
each is a real TCP peer of the gateway, nothing spoofed). The gateway trusts no client; the auth
service trusts the gateway (`TRUSTED_PROXIES=127.0.0.1`, the address the gateway connects
from), so it reads the client from the `X-Forwarded-For` the gateway writes — the production
chain (docs/gateway.md, "Forwarded headers and the client IP").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import base_env
from tests.support.auth import OTHER_PASSWORD, PASSWORD, bearer, unique_email
from tests.support.servers import Stack

GATEWAY = "127.0.0.1"  # where the gateway connects to the auth service from


@pytest.fixture(scope="module")
def lockout_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack.build(
        base_env(),
        tmp_path_factory.mktemp("lockout-stack"),
        ("auth", "gateway"),
        {"TRUSTED_PROXIES": GATEWAY},
    )
    try:
        running.start("auth")
        gateway = running.services["gateway"]
        gateway.start()  # live is enough: it is ready only when all five services are
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{gateway.url}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, gateway.log_path.read_text()[-3000:]
            time.sleep(0.1)
        yield running
    finally:
        running.stop()


def client_at(address: str, base: str) -> httpx.AsyncClient:
    """An HTTP client whose connections leave from `address`."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=base, transport=transport, timeout=30)


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/auth/login", json={"email": email, "password": password})


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_a_strangers_failures_lock_only_their_address(lockout_stack: Stack) -> None:
    """From address A, 8 wrong passwords lock A only; the owner logs in from address B."""
    base = lockout_stack.url("gateway")
    async with (
        client_at("127.0.0.2", base) as stranger,
        client_at("127.0.0.3", base) as owner,
        client_at("127.0.0.2", lockout_stack.url("auth")) as stranger_direct,
    ):
        email = unique_email("e2e-lock")
        body = {"email": email, "password": PASSWORD, "name": "Owner"}
        assert (await owner.post("/api/auth/register", json=body)).status_code == 201
        codes = [(await _login(stranger, email, OTHER_PASSWORD)).status_code for _ in range(8)]
        assert codes == [401] * 5 + [423] * 3
        locked = await _login(stranger, email, PASSWORD)  # the right password waits too
        assert locked.status_code == 423 and _code(locked) == "ACCOUNT_LOCKED"
        assert 1 <= locked.json()["error"]["details"]["retryAfter"] <= 60
        assert locked.headers["retry-after"] == str(locked.json()["error"]["details"]["retryAfter"])
        # The stranger cannot shed the lock by naming another address: only the gateway's
        # X-Forwarded-For is believed, and a direct request is judged by its own peer.
        spoofed = await stranger_direct.post(
            "/api/auth/login",
            json={"email": email, "password": PASSWORD},
            headers={"X-Forwarded-For": "127.0.0.3"},
        )
        assert spoofed.status_code == 423
        mine = await _login(owner, email, PASSWORD)
        assert mine.status_code == 200, mine.text
        sessions = await owner.get(
            "/api/auth/sessions", headers=bearer(mine.json()["data"]["accessToken"])
        )
        assert {s["ip"] for s in sessions.json()["data"]["sessions"]} == {"127.0.0.3"}
        assert (await _login(stranger, email, PASSWORD)).status_code == 423


async def test_account_ceiling_across_many_addresses(lockout_stack: Stack) -> None:
    """104 wrong passwords from 26 addresses (4 each, so none is locked on its own): exactly
    100 are verified (401), then 423 from every address — the owner's too — and the auth
    service logs `auth.account_under_attack` once and counts it."""
    base = lockout_stack.url("gateway")
    email = unique_email("e2e-ceiling")
    guess = "Not-The-Password-0"
    async with client_at("127.0.2.1", base) as owner:
        registered = await owner.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD, "name": "Owner"}
        )
        assert registered.status_code == 201, registered.text
        user_id = registered.json()["data"]["user"]["id"]

    async def attacker(index: int) -> list[int]:
        async with client_at(f"127.0.1.{index}", base) as client:
            return [(await _login(client, email, guess)).status_code for _ in range(4)]

    codes = [code for chunk in await asyncio.gather(*map(attacker, range(1, 27))) for code in chunk]
    assert sorted(codes) == [401] * 100 + [423] * 4
    for address in ("127.0.1.1", "127.0.1.26", "127.0.2.1", "127.0.3.1"):
        async with client_at(address, base) as client:
            refused = await _login(client, email, PASSWORD)
            assert refused.status_code == 423 and _code(refused) == "ACCOUNT_LOCKED", address
            assert 3000 < refused.json()["error"]["details"]["retryAfter"] <= 3600
    log = (lockout_stack.logdir / "auth.log").read_text()
    warnings = [line for line in log.splitlines() if "auth.account_under_attack" in line]
    assert len(warnings) == 1, log[-3000:]
    assert user_id in warnings[0] and email not in warnings[0]
    assert guess not in log and PASSWORD not in log
    metrics: Any = httpx.get(lockout_stack.url("auth") + "/metrics", timeout=10).text
    assert "paysys_auth_account_under_attack_total 1.0" in metrics
