"""Real-time updates end to end (api-contracts §9): the run's shared stack of real service
processes (its gateway is A) plus a second gateway process B, both reading the stream on their
own; clients over real sockets (`websockets`, httpx streaming).

The shared stack is used, not a private one: every service process of a run shares one database,
so any relay of the run may publish a row, and only the run's Redis sees them all. B logs at
INFO, uvicorn's own lines included, so the last test can check that no token reached a log."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from paysys.core.config import Settings
from paysys.core.redis import create_redis
from tests.support.auth import PASSWORD, bearer, login, register
from tests.support.payments import TestUser as PaymentUser
from tests.support.payments import body, make_user
from tests.support.realtime import (
    body_of,
    close_code,
    event_type_of,
    mint,
    next_event_frame,
    open_ws,
    quiet,
    recv_json,
    refused,
    send_json,
    sse,
    until,
    ws_url,
)
from tests.support.servers import RedisServer, ServiceProcess, Stack, free_port

pytestmark = pytest.mark.e2e

TOKENS_USED: list[str] = []  # every token this module sent in a query string


@dataclass
class RealtimeStack:
    stack: Stack
    gateway_b: ServiceProcess
    redis: RedisServer

    @property
    def a(self) -> str:
        return self.stack.url("gateway")

    @property
    def b(self) -> str:
        return self.gateway_b.url

    def logs(self) -> str:
        paths = [s.log_path for s in self.stack.services.values()]
        return "".join(p.read_text(errors="replace") for p in [*paths, self.gateway_b.log_path])


@pytest.fixture(scope="module")
def rt(
    stack: Stack, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealtimeStack]:
    port = free_port()
    env = {**stack.base_env, "PORT": str(port), "LOG_LEVEL": "INFO", "UVICORN_LOG_LEVEL": "info"}
    log_path = tmp_path_factory.mktemp("realtime") / "gateway-b.log"
    gateway_b = ServiceProcess("gateway", port, env, log_path)
    gateway_b.start()
    try:
        gateway_b.wait_ready()
        yield RealtimeStack(stack, gateway_b, redis_server)
    finally:
        gateway_b.stop()


@pytest.fixture
async def redis(rt: RealtimeStack) -> AsyncIterator[Redis]:
    client = create_redis(rt.redis.url)
    # Handshakes and sign-ins all come from 127.0.0.1: start each test with fresh budgets.
    keys = [key async for key in client.scan_iter("gw:rl:*")]
    if keys:
        await client.delete(*keys)
    yield client
    await client.aclose()


def ws(base: str, token: str) -> str:
    TOKENS_USED.append(token)
    return ws_url(base, token)


async def connect(base: str, token: str) -> Any:
    socket = await open_ws(ws(base, token))
    hello = await recv_json(socket)
    assert hello["type"] == "connected", hello
    return socket


async def create_payment(
    client: httpx.AsyncClient, sender: PaymentUser, recipient: PaymentUser
) -> str:
    response = await client.post("/api/payments", json=body(recipient), headers=sender.headers)
    assert response.status_code == 201, response.text
    payment_id: str = response.json()["data"]["id"]
    return payment_id


def of_payment(payment_id: str) -> Any:
    def match(message: dict[str, Any]) -> bool:
        data = (message.get("payload") or {}).get("data") or {}
        return data.get("paymentId") == payment_id or data.get("resourceId") == payment_id

    return match


async def life_of(socket: Any, payment_id: str, until_type: str, timeout: float = 20) -> list[str]:
    """The event types this socket receives about the payment, up to `until_type`."""
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while not seen or seen[-1] != until_type:
            message = await until(socket, of_payment(payment_id), timeout)
            seen.append(str(event_type_of(message)))
    return seen


async def test_a_payments_life_reaches_its_parties_and_admins_and_nobody_else(
    rt: RealtimeStack, redis: Redis
) -> None:
    sender, recipient, stranger = await make_user(), await make_user("VENDOR"), await make_user()
    admin_token = mint(Settings(), "ADMIN")[0]
    sockets = [
        await connect(rt.a, sender.token),
        await connect(rt.a, recipient.token),
        await connect(rt.a, stranger.token),
        await connect(rt.a, admin_token),
    ]
    s, r, x, admin = sockets
    try:
        async with httpx.AsyncClient(base_url=rt.a, timeout=30) as client:
            payment_id = await create_payment(client, sender, recipient)
        expected = ["payment:created", "payment:updated", "payment:updated", "payment:completed"]
        for socket in (s, r):
            assert await life_of(socket, payment_id, "payment:completed") == expected
        admin_seen = await life_of(admin, payment_id, "payment:completed")
        assert [t for t in admin_seen if t != "admin:audit-created"] == expected
        assert admin_seen.count("admin:audit-created") >= 3  # created, two status changes
        assert await quiet(x, 0.5) == []
        # The new event fields routed it: status changes name both parties.
        # (ask again for one message to inspect its data)
        async with httpx.AsyncClient(base_url=rt.a, timeout=30) as client:
            second = await create_payment(client, sender, recipient)
        updated = await until(
            r, lambda m: of_payment(second)(m) and event_type_of(m) == "payment:updated"
        )
        data = updated["payload"]["data"]
        assert data["senderId"] == str(sender.id) and data["recipientId"] == str(recipient.id)
        assert data["status"] == "processing" and data["previousStatus"] == "pending"
        assert (data["amount"], data["currency"], data["type"]) == ("100.00", "USD", "instant")
        assert await quiet(x, 0.2) == []
    finally:
        for socket in sockets:
            await socket.close()


async def test_handshake_refusals_and_ping_through_a_gateway_process(
    rt: RealtimeStack, redis: Redis
) -> None:
    bad = await refused(ws(rt.b, "not-a-token"))
    assert bad.status_code == 401 and body_of(bad)["error"]["code"] == "TOKEN_INVALID"
    assert bad.headers["connection"] == "close"
    user = await make_user()
    foreign = await refused(ws(rt.b, user.token), origin="https://evil.example")
    assert foreign.status_code == 403 and body_of(foreign)["error"]["code"] == "FORBIDDEN"
    async with httpx.AsyncClient(base_url=rt.a, timeout=10) as client:
        plain = await client.get("/ws")
        assert plain.status_code == 426 and plain.headers["upgrade"] == "websocket"
    socket = await connect(rt.b, user.token)
    try:
        await send_json(socket, {"type": "ping", "id": "p-1"})
        pong = await recv_json(socket)
        assert pong["type"] == "pong" and pong["id"] == "p-1"
    finally:
        await socket.close()


async def test_subscriptions_follow_payment_visibility(rt: RealtimeStack, redis: Redis) -> None:
    sender, recipient, stranger = await make_user(), await make_user(), await make_user()
    admin_token = mint(Settings(), "ADMIN")[0]
    async with httpx.AsyncClient(base_url=rt.a, timeout=30) as client:
        payment_id = await create_payment(client, sender, recipient)
    room = f"payment:{payment_id}"
    for token, own, answer in (
        (sender.token, f"user:{sender.id}", "subscribed"),
        (recipient.token, f"user:{recipient.id}", "subscribed"),
        (admin_token, "role:admin", "subscribed"),
        (stranger.token, f"user:{stranger.id}", "PAYMENT_NOT_FOUND"),
    ):
        socket = await connect(rt.b, token)
        try:
            await send_json(socket, {"type": "subscribe", "payload": {"room": own}})
            assert (await until(socket, lambda m: m["type"] != "event"))["type"] == "subscribed"
            await send_json(socket, {"type": "subscribe", "payload": {"room": room}, "id": "r"})
            reply = await until(socket, lambda m: m.get("id") == "r")
            got = reply["type"] if reply["type"] == "subscribed" else reply["payload"]["code"]
            assert got == answer, reply
            await send_json(socket, {"type": "subscribe", "payload": {"room": "role:vendor"}})
            reply = await until(socket, lambda m: m["type"] == "error")
            assert reply["payload"]["code"] == "FORBIDDEN"
        finally:
            await socket.close()


async def test_logout_and_an_ended_session_close_their_sockets_with_4403_within_a_second(
    rt: RealtimeStack, redis: Redis
) -> None:
    async with httpx.AsyncClient(base_url=rt.a, timeout=30) as client:
        account = await register(client)
        email = account["user"]["email"]
        other = (await login(client, email, PASSWORD)).json()["data"]
        third = (await login(client, email, PASSWORD)).json()["data"]
        first_socket = await connect(rt.a, account["accessToken"])
        other_socket = await connect(rt.b, other["accessToken"])
        third_socket = await connect(rt.b, third["accessToken"])
        try:
            started = time.monotonic()
            out = await client.post("/api/auth/logout", headers=bearer(account["accessToken"]))
            assert out.status_code == 200, out.text
            code, seen = await close_code(first_socket, 5)
            assert code == 4403 and time.monotonic() - started < 1.0, time.monotonic() - started
            assert seen[-1]["payload"]["code"] == "TOKEN_INVALID"
            # Ending one session from another device (DELETE /api/auth/sessions/{id}).
            sessions = await client.get("/api/auth/sessions", headers=bearer(third["accessToken"]))
            current = [s for s in sessions.json()["data"]["sessions"] if not s["current"]]
            sid = _sid(other["accessToken"])
            assert sid in [s["id"] for s in current]
            started = time.monotonic()
            ended = await client.delete(
                f"/api/auth/sessions/{sid}", headers=bearer(third["accessToken"])
            )
            assert ended.status_code == 204
            assert (await close_code(other_socket, 5))[0] == 4403
            assert time.monotonic() - started < 1.0
            await send_json(third_socket, {"type": "ping"})  # that device's session lives on
            assert (await until(third_socket, lambda m: m["type"] == "pong"))["type"] == "pong"
            # The closed sockets' token is refused at the next handshake (no reconnect loop).
            again = await refused(ws(rt.a, account["accessToken"]))
            assert again.status_code == 401
        finally:
            for socket in (first_socket, other_socket, third_socket):
                await socket.close()


def _sid(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["sid"])


async def test_two_gateways_each_deliver_to_their_own_sockets(
    rt: RealtimeStack, redis: Redis
) -> None:
    sender, recipient = await make_user(), await make_user()
    on_a, on_b = await connect(rt.a, sender.token), await connect(rt.b, recipient.token)
    try:
        async with httpx.AsyncClient(base_url=rt.b, timeout=30) as client:
            payment_id = await create_payment(client, sender, recipient)
        for socket in (on_a, on_b):
            message = await until(socket, of_payment(payment_id))
            assert event_type_of(message) == "payment:created"
    finally:
        await on_a.close()
        await on_b.close()


async def test_event_stream_resumes_with_last_event_id_without_losing_anything(
    rt: RealtimeStack, redis: Redis
) -> None:
    sender, recipient = await make_user(), await make_user()
    async with httpx.AsyncClient(base_url=rt.a, timeout=30) as client:
        async with sse(rt.a, recipient.token) as (response, frames):
            assert response.status_code == 200
            assert (await next_event_frame(frames)).event == "connected"
            first = await create_payment(client, sender, recipient)
            frame = await next_event_frame(frames, 20)
            assert frame.json["payload"]["data"]["paymentId"] == first
            last_id = frame.id
        assert last_id is not None
        # While disconnected: another payment's whole life.
        missed = await create_payment(client, sender, recipient)
        deadline = time.monotonic() + 20
        while (await client.get(f"/api/payments/{missed}", headers=sender.headers)).json()["data"][
            "status"
        ] != "completed":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    async with sse(rt.b, recipient.token, header_last_event_id=last_id) as (_r, frames):
        await next_event_frame(frames)  # connected
        replayed: list[tuple[str, str]] = []
        while not replayed or replayed[-1] != (missed, "payment:completed"):
            frame = await next_event_frame(frames, 20)
            replayed.append((frame.json["payload"]["data"]["paymentId"], str(frame.event)))
    life = [kind for pid, kind in replayed if pid == missed]
    assert life == ["payment:created", "payment:updated", "payment:updated", "payment:completed"]
    # Whatever of the first payment's life came after `last_id` is replayed too, in order.
    assert all(kind != "payment:created" for pid, kind in replayed if pid == first)


async def test_delivery_resumes_after_redis_restarts_mid_stream(
    rt: RealtimeStack, redis: Redis
) -> None:
    sender, recipient = await make_user(), await make_user()
    socket = await connect(rt.a, recipient.token)
    try:
        async with sse(rt.b, recipient.token) as (_r, frames):
            await next_event_frame(frames)
            rt.redis.stop()
            try:
                await asyncio.sleep(1.0)
                await send_json(socket, {"type": "ping"})  # open sockets stay open
                assert (await recv_json(socket))["type"] == "pong"
                # A payment while Redis is down: its events wait in the outbox.
                async with httpx.AsyncClient(base_url=rt.a, timeout=30) as client:
                    payment_id = await create_payment(client, sender, recipient)
            finally:
                rt.redis.start()
            message = await until(socket, of_payment(payment_id), 30)
            assert event_type_of(message) == "payment:created"
            frame = await next_event_frame(frames, 30)  # the live stream continues too
            assert frame.json["payload"]["data"]["paymentId"] == payment_id
    finally:
        await socket.close()


async def test_token_expiry_closes_with_4401(rt: RealtimeStack, redis: Redis) -> None:
    user = await make_user()
    token, _ = mint(Settings(), "CUSTOMER", user.id, expiry="2s")  # as JWT_ACCESS_EXPIRY=2s
    socket = await connect(rt.b, token)
    code, seen = await close_code(socket, 6)
    assert code == 4401 and seen[-1]["payload"]["code"] == "TOKEN_EXPIRED"


async def test_sigterm_closes_every_socket_with_1001_and_no_token_is_ever_logged(
    rt: RealtimeStack, redis: Redis
) -> None:
    users = [await make_user() for _ in range(3)]
    sockets = [await connect(rt.b, user.token) for user in users]
    assert rt.gateway_b.proc is not None
    rt.gateway_b.proc.send_signal(signal.SIGTERM)
    for socket in sockets:
        assert (await close_code(socket, 10))[0] == 1001
    assert rt.gateway_b.proc.wait(20) == 0
    rt.gateway_b.proc = None
    # Logs: the requests with ?token= are there, the tokens are not.
    logs = rt.logs()
    assert "/ws?token=[REDACTED]" in logs and "realtime closed" in logs
    leaked = [token for token in TOKENS_USED if token in logs]
    assert not leaked, f"{len(leaked)} token(s) found in the logs"
    assert Path(rt.gateway_b.log_path).stat().st_size > 0
