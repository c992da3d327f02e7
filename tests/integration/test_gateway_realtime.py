"""The gateway's real-time endpoints in-process, over real sockets: the real gateway app served
by uvicorn exactly as `paysys serve` configures it (`server_options`: the coalescing HTTP
protocol, the WebSocket protocol with the §9.5 timeouts), against a private redis-server that
the tests publish events into and stop at will. Clients: `websockets` and httpx streaming."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from starlette.applications import Starlette
from typer.testing import CliRunner

from paysys.cli.events import app as events_cli
from paysys.cli.events import socket_view, tail_events
from paysys.cli.serve import server_options
from paysys.core.config import Settings
from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.transport import STREAM, channel, stream_fields
from paysys.core.redis import create_redis
from paysys.core.revocation import revoke_token, revoke_user_tokens_before
from paysys.core.serving import CoalescingTransport, TerminatingWebSocketProtocol
from paysys.core.tokens import TokenCodec, now_ms
from paysys.gateway.ratelimit import Policy
from paysys.gateway.realtime import sse as sse_module
from paysys.gateway.realtime.limits import HANDSHAKE_POLICY, MessageRate
from paysys.gateway.realtime.service import Realtime
from tests.support.realtime import (
    body_of,
    close_code,
    event_type_of,
    mint,
    next_event_frame,
    next_frame,
    open_ws,
    payment_data,
    publish,
    quiet,
    recv_json,
    refused,
    send_json,
    sse,
    until,
    ws_url,
)
from tests.support.servers import RedisServer, free_port

DEAD = ["http://127.0.0.1:9"]  # no service behind: the realtime endpoints need none
PLENTY = Policy("realtime-handshake", 100_000, 60)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Served:
    base: str
    app: Starlette
    server: uvicorn.Server
    settings: Settings

    @property
    def realtime(self) -> Realtime:
        realtime: Realtime = self.app.state.gateway.realtime
        return realtime

    def ws(self, token: str | None = None, path: str = "/ws") -> str:
        return ws_url(self.base, token, path)

    def token(self, role: str = "CUSTOMER", user: uuid.UUID | None = None, **kw: Any) -> str:
        return mint(self.settings, role, user, **kw)[0]


@asynccontextmanager
async def serve(
    redis_url: str,
    *,
    ws_options: dict[str, Any] | None = None,
    sweep_interval: float | None = None,
    **overrides: Any,
) -> AsyncIterator[Served]:
    from paysys.gateway.app import create_app

    settings = Settings(
        redis_url=redis_url,
        auth_service_url=DEAD,
        payments_service_url=DEAD,
        admin_service_url=DEAD,
        profile_service_url=DEAD,
        upstream_probe_interval=3600,
        upstream_timeout=1.0,
        **overrides,
    )
    app = create_app(settings)
    realtime: Realtime = app.state.gateway.realtime
    realtime.gate.handshake_policy = PLENTY
    realtime.stream_block_ms = 500  # shorter blocking reads: quicker shutdowns in tests
    if sweep_interval is not None:
        realtime.sweep_interval = sweep_interval
    port = free_port()
    options = server_options("127.0.0.1", port)
    options.update(loop="asyncio", log_level="warning", **(ws_options or {}))
    server = uvicorn.Server(uvicorn.Config(lambda: app, **options))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        assert not task.done(), "server did not start"
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", app, server, settings)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


@pytest.fixture(scope="module")
def redis_private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), Path(tmp_path_factory.mktemp("rt-redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def redis(redis_private: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_private.url)  # retries on a fresh connection after a restart
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def gw(redis_private: RedisServer) -> AsyncIterator[Served]:
    async with serve(redis_private.url) as served:
        yield served


def connected_count(served: Served) -> int:
    return len(served.realtime.hub.connections)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- handshake -------------------------------------------------------------------------------
async def test_the_upgrade_goes_through_the_services_own_protocols(gw: Served) -> None:
    user = uuid.uuid4()
    token, claims = mint(gw.settings, "VENDOR", user)
    socket_ = await open_ws(
        gw.ws(token),
        compression="deflate",  # offered: the server must not take it
        subprotocols=["chat"],  # offered: no subprotocol is chosen
        additional_headers={"X-Request-ID": "my-conn-1"},
    )
    try:
        response = socket_.response
        assert response is not None
        assert "sec-websocket-extensions" not in response.headers
        assert "sec-websocket-protocol" not in response.headers
        assert response.headers["x-request-id"] == "my-conn-1"
        hello = await recv_json(socket_)
        assert hello["type"] == "connected" and hello["timestamp"].endswith("Z")
        assert hello["payload"] == {
            "userId": str(user),
            "rooms": [f"user:{user}", "role:vendor", "broadcast"],
            "connectionId": "my-conn-1",
            "expiresAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(claims["exp"])),
        }
        protocols = [
            c
            for c in gw.server.server_state.connections
            if isinstance(c, TerminatingWebSocketProtocol)
        ]
        assert protocols and all(isinstance(p.transport, CoalescingTransport) for p in protocols)
        assert metric("realtime_connections", transport="ws") >= 1
    finally:
        await socket_.close()


async def test_every_refusal_is_plain_http_before_the_upgrade(gw: Served, redis: Redis) -> None:
    codec = TokenCodec(gw.settings)
    user = uuid.uuid4()
    stale, _ = codec.issue_access(
        user_id=user,
        email="e@x.io",
        name="E",
        role="CUSTOMER",
        sid="s",
        issued_ms=now_ms() - 3_600_000,
    )
    revoked, claims = mint(gw.settings)
    await revoke_token(redis, claims["jti"], claims["exp"])
    before = metric("realtime_handshakes_rejected_total", reason="origin")
    cases = [
        (gw.ws(), {}, 401, "UNAUTHORIZED"),
        (gw.ws("not-a-jwt"), {}, 401, "TOKEN_INVALID"),
        (gw.ws(stale), {}, 401, "TOKEN_EXPIRED"),
        (gw.ws(revoked), {}, 401, "TOKEN_INVALID"),
        (gw.ws(gw.token()), {"origin": "https://evil.example"}, 403, "FORBIDDEN"),
        (gw.ws(gw.token(), "/elsewhere"), {}, 404, "NOT_FOUND"),
        (gw.ws(gw.token(), "/api/payments/x"), {}, 404, "NOT_FOUND"),
        (gw.ws(), {"additional_headers": {"Authorization": "Basic abc"}}, 401, "UNAUTHORIZED"),
    ]
    for url, kwargs, status, code in cases:
        response = await refused(url, **kwargs)
        assert response.status_code == status, (url, response.body)
        assert response.headers["connection"] == "close"
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-content-type-options"] == "nosniff"
        error = body_of(response)["error"]
        assert error["code"] == code and error["requestId"] == response.headers["x-request-id"]
    assert metric("realtime_handshakes_rejected_total", reason="origin") == before + 1
    # An allowed origin, no origin, and a Bearer header instead of the query all pass.
    for kwargs in ({"origin": "http://localhost:4200"}, {}):
        async with await open_ws(gw.ws(gw.token()), **kwargs) as ok:
            assert (await recv_json(ok))["type"] == "connected"
    bearer = {"Authorization": f"Bearer {gw.token()}"}
    async with await open_ws(gw.ws(), additional_headers=bearer) as ok:
        assert (await recv_json(ok))["type"] == "connected"


async def test_plain_http_to_ws_is_426_and_the_event_stream_bypasses_the_proxy(
    gw: Served,
) -> None:
    async with httpx.AsyncClient(base_url=gw.base) as client:
        for path in ("/ws", "/ws/"):
            r = await client.get(path, headers={"origin": "http://localhost:4200"})
            assert r.status_code == 426 and r.headers["upgrade"] == "websocket"
            assert r.json()["error"]["code"] == "UPGRADE_REQUIRED"
            assert r.headers["access-control-allow-origin"] == "http://localhost:4200"
            assert r.headers["connection"] == "close"
        r = await client.post("/ws")
        assert r.status_code == 405
        assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}
        assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
        # Served by the gateway, not forwarded (no service is reachable here: that would 502).
        r = await client.get("/api/events/stream", headers={"origin": "http://localhost:4200"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
        assert r.headers["access-control-allow-origin"] == "http://localhost:4200"
        r = await client.get("/api/events/other")
        assert r.status_code == 404


async def test_handshakes_per_ip_are_limited_through_the_gateways_limiter(
    redis_private: RedisServer,
) -> None:
    async with serve(redis_private.url, trusted_proxies=["127.0.0.1"]) as served:
        served.realtime.gate.handshake_policy = HANDSHAKE_POLICY  # 30 per 60 s
        ip = {"X-Forwarded-For": f"203.0.113.{uuid.uuid4().int % 250}"}
        for _ in range(HANDSHAKE_POLICY.limit):
            async with await open_ws(served.ws(served.token()), additional_headers=ip) as ok:
                await recv_json(ok)
        response = await refused(served.ws(served.token()), additional_headers=ip)
        assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
        assert body_of(response)["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        other_ip = {"X-Forwarded-For": "198.51.100.7"}
        async with await open_ws(served.ws(served.token()), additional_headers=other_ip) as ok:
            assert (await recv_json(ok))["type"] == "connected"


async def test_connections_per_user_are_counted_across_replicas_and_locally_without_redis(
    redis_private: RedisServer,
) -> None:
    async with (
        serve(redis_private.url, realtime_max_connections_per_user=2) as a,
        serve(redis_private.url, realtime_max_connections_per_user=2) as b,
    ):
        user = uuid.uuid4()
        first = await open_ws(a.ws(a.token(user=user)))
        second = await open_ws(b.ws(b.token(user=user)))
        response = await refused(a.ws(a.token(user=user)))
        assert response.status_code == 429 and response.headers["retry-after"] == "10"
        async with sse(b.base, b.token(user=user)) as (r, _frames):  # SSE counts too
            assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        await second.close()
        await wait_for(lambda: connected_count(b) == 0)
        await asyncio.sleep(0.1)  # the slot is released right after the close
        third = await open_ws(b.ws(b.token(user=user)))
        assert (await recv_json(third))["type"] == "connected"
        await third.close()
        await wait_for(lambda: connected_count(b) == 0)

        redis_private.stop()
        try:
            # Per process now: `a` holds one of the user's connections, so one more there.
            extra = await open_ws(a.ws(a.token(user=user)))
            assert (await recv_json(extra))["type"] == "connected"
            assert (await refused(a.ws(a.token(user=user)))).status_code == 429
            # Open sockets stay open and answer while Redis is down.
            await send_json(first, {"type": "ping", "id": "p"})
            assert (await until(first, lambda m: m["type"] == "pong"))["id"] == "p"
        finally:
            redis_private.start()
        await extra.close()
        await first.close()


async def test_process_cap_and_draining_answer_503_and_drain_closes_with_1001(
    redis_private: RedisServer,
) -> None:
    async with serve(redis_private.url, realtime_max_connections=2) as served:
        admin = await open_ws(served.ws(served.token("ADMIN")))
        await recv_json(admin)
        async with sse(served.base, served.token()) as (response, frames):
            assert response.status_code == 200
            assert (await next_event_frame(frames)).event == "connected"
            full = await refused(served.ws(served.token()))
            assert full.status_code == 503 and full.headers["retry-after"] == "5"
            assert body_of(full)["error"]["code"] == "SERVICE_UNAVAILABLE"
            await served.realtime.drain()
            code, _ = await close_code(admin)
            assert code == 1001
            with pytest.raises(StopAsyncIteration):  # the stream ended
                await next_frame(frames, 5)
        assert connected_count(served) == 0
        late = await refused(served.ws(served.token()))
        assert late.status_code == 503 and body_of(late)["error"]["code"] == "SERVICE_UNAVAILABLE"


# -- messages --------------------------------------------------------------------------------
async def test_client_messages_and_subscription_rules(
    gw: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MessageRate, "CAPACITY", 1000.0)  # ~80 messages here, at once
    user = uuid.uuid4()
    async with await open_ws(gw.ws(gw.token(user=user))) as ws:
        await recv_json(ws)

        async def ask(message: Any) -> dict[str, Any]:
            await ws.send(message if isinstance(message, str) else json.dumps(message))
            return await recv_json(ws)

        pong = await ask({"type": "ping", "id": "x1", "extra": "ignored"})
        assert pong["type"] == "pong" and pong["id"] == "x1"
        assert "id" not in await ask({"type": "ping"})
        assert (await ask("{nope"))["payload"]["code"] == "INVALID_JSON"
        assert (await ask("[" * 2000 + "]" * 2000))["payload"]["code"] == "INVALID_JSON"
        for bad in ([1, 2], {"type": 5}, {"type": "message"}, {"type": "ping", "id": 7}):
            reply = await ask(bad)
            assert reply["type"] == "error" and reply["payload"]["code"] == "VALIDATION_ERROR"

        async def subscribe(payload: Any, kind: str = "subscribe") -> dict[str, Any]:
            return await ask({"type": kind, "payload": payload, "id": "s"})

        ok = await subscribe({"eventType": "payment:created"})
        assert ok == {
            **ok,
            "type": "subscribed",
            "id": "s",
            "payload": {"eventType": "payment:created"},
        }
        assert (await subscribe({"eventType": "payment:created"}))["type"] == "subscribed"
        for room in (f"user:{user}", "role:customer", "broadcast"):
            assert (await subscribe({"room": room}))["type"] == "subscribed"
        for room in (f"user:{uuid.uuid4()}", "role:admin", "role:vendor", "weird:1", "user:"):
            reply = await subscribe({"room": room})
            assert reply["payload"]["code"] == "FORBIDDEN" and reply["id"] == "s"
        assert (await subscribe({"room": "payment:not-a-uuid"}))["payload"]["code"] == (
            "PAYMENT_NOT_FOUND"
        )
        # The payments service is down here: the caller is told, not wrongly acknowledged.
        down = await subscribe({"room": f"payment:{uuid.uuid4()}"})
        assert down["payload"]["code"] == "SERVICE_UNAVAILABLE"
        for payload in (
            None,
            {},
            {"eventType": "a", "room": "b"},
            {"room": 5},
            {"eventType": "x" * 200},
        ):
            assert (await subscribe(payload))["payload"]["code"] == "VALIDATION_ERROR"
        # At most 50 subscriptions (4 held now).
        for index in range(46):
            assert (await subscribe({"eventType": f"custom:{index}"}))["type"] == "subscribed"
        full = await subscribe({"eventType": "custom:extra"})
        assert full["payload"]["code"] == "VALIDATION_ERROR" and "50" in full["payload"]["message"]
        gone = await subscribe({"eventType": "custom:0"}, "unsubscribe")
        assert gone["type"] == "unsubscribed" and gone["payload"] == {"eventType": "custom:0"}
        assert (await subscribe({"eventType": "custom:extra"}))["type"] == "subscribed"


async def test_size_binary_and_rate_limits_close_with_their_codes(gw: Served) -> None:
    async with await open_ws(gw.ws(gw.token())) as big:
        await recv_json(big)
        await big.send(json.dumps({"type": "ping", "pad": "x" * 5000}))
        assert (await close_code(big))[0] == 1009
    async with await open_ws(gw.ws(gw.token())) as binary:
        await recv_json(binary)
        await binary.send(b"\x00\x01")
        assert (await close_code(binary))[0] == 1003
    async with await open_ws(gw.ws(gw.token())) as chatty:
        await recv_json(chatty)
        for _ in range(23):
            await send_json(chatty, {"type": "ping"})
        code, seen = await close_code(chatty)
        assert code == 1008
        kinds = [m["type"] for m in seen]
        assert kinds[:20] == ["pong"] * 20
        errors = [m["payload"]["code"] for m in seen if m["type"] == "error"]
        assert errors == ["RATE_LIMIT_EXCEEDED"] * 3  # two answers, then the closing error


async def test_a_client_that_stops_reading_is_cut_off_with_1013(gw: Served, redis: Redis) -> None:
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", int(gw.base.rsplit(":", 1)[1])))
    raw.setblocking(False)
    slow = await open_ws(gw.ws(gw.token("ADMIN")), sock=raw, max_queue=1, max_size=2**20)
    try:
        await recv_json(slow)
        before = metric("realtime_closed_total", code="1013")
        pipe = redis.pipeline(transaction=False)
        user = uuid.uuid4()
        for _ in range(12000):  # 2 messages, ~750 bytes, per event for an admin: ~9 MB
            event = EventEnvelope(type="payment.created", source="t", data=payment_data(user, None))
            pipe.xadd(STREAM, stream_fields(str(event.id), event.type, json.dumps(event.to_wire())))
        await pipe.execute()
        await wait_for(lambda: metric("realtime_closed_total", code="1013") > before, 20)
        code, _ = await close_code(slow, 20)
        assert code == 1013
    finally:
        await slow.close()


# -- expiry, revocation ---------------------------------------------------------------------------
async def test_expiry_sends_an_error_then_closes_with_4401(gw: Served) -> None:
    token, claims = mint(gw.settings, expiry="2s")
    async with await open_ws(gw.ws(token)) as ws:
        await recv_json(ws)
        code, seen = await close_code(ws, 5)
        assert code == 4401 and time.time() >= claims["exp"] - 0.05
        assert seen[-1]["type"] == "error" and seen[-1]["payload"]["code"] == "TOKEN_EXPIRED"


async def test_revocation_event_closes_only_the_revoked_session_with_4403(
    gw: Served, redis: Redis
) -> None:
    user = uuid.uuid4()
    token_a, claims_a = mint(gw.settings, user_id=user, sid=str(uuid.uuid4()))
    token_b, _ = mint(gw.settings, user_id=user, sid=str(uuid.uuid4()))
    a, b = await open_ws(gw.ws(token_a)), await open_ws(gw.ws(token_b))
    try:
        await recv_json(a)
        await recv_json(b)
        await revoke_token(redis, claims_a["jti"], claims_a["exp"])  # logout of session a
        started = time.monotonic()
        await publish(
            redis,
            "user.logged_out",
            {"userId": str(user), "allSessions": False, "sessionId": claims_a["sid"]},
        )
        code, seen = await close_code(a, 5)
        assert code == 4403 and time.monotonic() - started < 1.0
        assert seen[-1]["payload"]["code"] == "TOKEN_INVALID"
        await send_json(b, {"type": "ping"})  # the other session lives on
        assert (await recv_json(b))["type"] == "pong"
    finally:
        await a.close()
        await b.close()


async def test_the_periodic_sweep_catches_a_revocation_without_an_event(
    redis_private: RedisServer, redis: Redis
) -> None:
    async with serve(redis_private.url, sweep_interval=0.3) as served:
        user = uuid.uuid4()
        async with await open_ws(served.ws(served.token(user=user))) as ws:
            await recv_json(ws)
            await send_json(ws, {"type": "ping"})
            assert (await recv_json(ws))["type"] == "pong"  # survives sweeps while valid
            await asyncio.sleep(0.4)
            # e.g. a password change published while this gateway could not read the stream
            await revoke_user_tokens_before(redis, user, now_ms(), 600)
            code, seen = await close_code(ws, 5)
            assert code == 4403 and seen[-1]["payload"]["code"] == "TOKEN_INVALID"


# -- events --------------------------------------------------------------------------------------
async def test_events_reach_the_parties_and_admins_once_and_nobody_else(
    gw: Served, redis: Redis
) -> None:
    sender, recipient = uuid.uuid4(), uuid.uuid4()
    sockets = [
        await open_ws(gw.ws(gw.token(user=sender))),
        await open_ws(gw.ws(gw.token(user=recipient))),
        await open_ws(gw.ws(gw.token())),  # a stranger
        await open_ws(gw.ws(gw.token("ADMIN"))),
    ]
    s, r, stranger, admin = sockets
    try:
        for ws in sockets:
            await recv_json(ws)
        data = payment_data(sender, recipient)
        _, event = await publish(redis, "payment.created", data, str(sender))
        for ws in (s, r):
            message = await recv_json(ws)
            assert event_type_of(message) == "payment:created" and message["id"] == str(event.id)
            assert message["payload"]["data"]["paymentId"] == data["payment"]["id"]
        assert [event_type_of(await recv_json(admin)) for _ in range(2)] == [
            "payment:created",
            "admin:audit-created",
        ]
        # The relay published it again (at least once): nobody gets it twice.
        await redis.xadd(
            "events", stream_fields(str(event.id), event.type, json.dumps(event.to_wire()))
        )
        # An old-style status change without its parties: admins only.
        old = {
            "paymentId": data["payment"]["id"],
            "oldStatus": "pending",
            "newStatus": "processing",
        }
        await publish(redis, "payment.status_changed", old)
        assert event_type_of(await recv_json(admin)) == "payment:updated"
        assert event_type_of(await recv_json(admin)) == "admin:audit-created"
        for ws in (s, r, stranger):
            assert await quiet(ws, 0.3) == []
        assert await quiet(admin, 0.1) == []
        assert metric("realtime_events_forwarded_total", event_type="payment:created") >= 1
        assert REGISTRY.get_sample_value("realtime_stream_lag_seconds_count") >= 1
    finally:
        for ws in sockets:
            await ws.close()


async def test_delivery_resumes_after_a_redis_restart(
    gw: Served, redis: Redis, redis_private: RedisServer
) -> None:
    user = uuid.uuid4()
    async with await open_ws(gw.ws(gw.token(user=user))) as ws:
        await recv_json(ws)
        redis_private.stop()
        try:
            await asyncio.sleep(0.7)  # the reader notices
            await send_json(ws, {"type": "ping"})  # heartbeats continue
            assert (await recv_json(ws))["type"] == "pong"
        finally:
            redis_private.start()
        _, event = await publish(redis, "payment.created", payment_data(user, None))
        message = await recv_json(ws, 15)
        assert message["id"] == str(event.id)
    assert metric("realtime_stream_read_errors_total") >= 1


# -- the WebSocket protocol's own timeouts (frames the app never sees) ---------------------------
def _frames(data: bytes) -> list[int]:
    """Opcodes of the (unmasked, server-sent) WebSocket frames in `data`."""
    opcodes = []
    while len(data) >= 2:
        length = data[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4]), 4
        elif length == 127:
            length, offset = int.from_bytes(data[2:10]), 10
        opcodes.append(data[0] & 0x0F)
        data = data[offset + length :]
    return opcodes


async def _raw_socket_until_eof(served: Served, token: str, timeout: float) -> tuple[bytes, float]:
    port = int(served.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(-1), timeout)  # never answering pings
    writer.close()
    return data, time.monotonic() - started


async def test_no_pong_or_no_frame_at_all_drops_the_connection_without_a_close_frame(
    redis_private: RedisServer,
) -> None:
    pings = {"ws_ping_interval": 0.2, "ws_ping_timeout": 0.3}
    async with serve(redis_private.url, ws_options=pings) as served:
        data, elapsed = await _raw_socket_until_eof(served, served.token(), 5)
        opcodes = _frames(data)
        assert opcodes[0] == 0x1 and 0x9 in opcodes and 0x8 not in opcodes, opcodes
        assert elapsed < 2
        async with await open_ws(served.ws(served.token()), ping_interval=None) as healthy:
            await recv_json(healthy)  # the library answers the pings: still open afterwards
            await asyncio.sleep(1.0)
            await send_json(healthy, {"type": "ping"})
            assert (await recv_json(healthy))["type"] == "pong"
    idle = type("Idle", (TerminatingWebSocketProtocol,), {"idle_timeout": 0.5})
    quiet_server = {"ws_ping_interval": None, "ws": idle}
    async with serve(redis_private.url, ws_options=quiet_server) as served:
        data, elapsed = await _raw_socket_until_eof(served, served.token(), 5)
        assert 0x8 not in _frames(data) and 0.4 < elapsed < 2
        async with await open_ws(served.ws(served.token()), ping_interval=None) as talker:
            await recv_json(talker)
            for _ in range(4):  # a frame every 0.3 s keeps it open past the idle timeout
                await asyncio.sleep(0.3)
                await send_json(talker, {"type": "ping"})
                assert (await recv_json(talker))["type"] == "pong"


# -- Server-Sent Events --------------------------------------------------------------------------
async def test_event_stream_frames_filters_and_keepalive(
    gw: Served, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse_module, "PING_INTERVAL", 0.3)
    user = uuid.uuid4()
    async with (
        sse(gw.base, gw.token(user=user), header_origin="http://localhost:4200") as (r, frames),
        sse(gw.base, gw.token("ADMIN"), types="payment:created") as (_ar, admin_frames),
    ):
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert r.headers["cache-control"] == "no-cache, no-transform"
        assert r.headers["x-accel-buffering"] == "no"
        assert r.headers["access-control-allow-origin"] == "http://localhost:4200"
        first = await next_frame(frames)
        assert first.retry == 3000 and first.event is None
        connected = await next_frame(frames)
        assert connected.event == "connected" and connected.json["payload"]["userId"] == str(user)
        await next_event_frame(admin_frames)
        ping = await next_frame(frames, 2)  # idle: a keep-alive comment
        assert ping.comments == ["ping"]
        stream_id, event = await publish(redis, "payment.created", payment_data(user, None))
        frame = await next_event_frame(frames)
        assert frame.id == stream_id and frame.event == "payment:created"
        assert frame.json["type"] == "event" and frame.json["id"] == str(event.id)
        admin_frame = await next_event_frame(admin_frames)  # no admin:audit-created: filtered
        assert admin_frame.event == "payment:created"
        await publish(redis, "config.updated", {"key": "k"})
        _, later = await publish(redis, "payment.created", payment_data(uuid.uuid4(), None))
        assert (await next_event_frame(admin_frames)).json["id"] == str(later.id)


async def test_last_event_id_replays_what_was_missed_then_continues_live(
    gw: Served, redis: Redis
) -> None:
    user = uuid.uuid4()
    token = gw.token(user=user)
    async with sse(gw.base, token) as (_r, frames):
        await next_event_frame(frames)
        seen_id, _ = await publish(redis, "payment.created", payment_data(user, None))
        assert (await next_event_frame(frames)).id == seen_id
    missed_id, missed = await publish(redis, "payment.created", payment_data(uuid.uuid4(), user))
    await publish(redis, "payment.created", payment_data(uuid.uuid4(), None))  # not for user
    async with sse(gw.base, token, header_last_event_id=seen_id) as (_r, frames):
        assert (await next_event_frame(frames)).event == "connected"
        replayed = await next_event_frame(frames)
        assert replayed.id == missed_id and replayed.json["id"] == str(missed.id)
        live_id, _ = await publish(redis, "payment.created", payment_data(user, None))
        assert (await next_event_frame(frames)).id == live_id
    async with sse(gw.base, token, lastEventId=missed_id) as (_r, frames):
        await next_event_frame(frames)
        assert (await next_event_frame(frames)).id == live_id  # the query form works too
    # Too old (or trimmed): a reset, carrying the newest id so the next resume starts there.
    async with sse(gw.base, token, header_last_event_id="1-0") as (_r, frames):
        await next_event_frame(frames)
        reset = await next_event_frame(frames)
        assert reset.event == "reset" and reset.json["payload"]["eventType"] == "sync:reset"
        assert reset.id is not None


async def test_event_stream_refusals_expiry_and_revocation(gw: Served, redis: Redis) -> None:
    async with sse(gw.base, "garbage") as (r, _):
        assert r.status_code == 401 and r.headers["connection"] == "close"
    async with sse(gw.base, gw.token(), header_last_event_id="nope") as (r, _):
        assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    async with sse(gw.base, gw.token(), types="payment:bogus") as (r, _):
        assert r.status_code == 400
    async with sse(gw.base, gw.token(), header_origin="https://evil.example") as (r, _):
        assert r.status_code == 403
    async with sse(gw.base, None, token=gw.token()) as (r, frames):  # ?token= like EventSource
        assert r.status_code == 200
    token, _claims = mint(gw.settings, expiry="2s")
    async with sse(gw.base, token) as (_r, frames):
        await next_event_frame(frames)
        error = await next_event_frame(frames, 5)
        assert error.event == "error" and error.json["payload"]["code"] == "TOKEN_EXPIRED"
        with pytest.raises(StopAsyncIteration):
            await next_frame(frames, 5)
    user = uuid.uuid4()
    token, claims = mint(gw.settings, user_id=user)
    async with sse(gw.base, token) as (_r, frames):
        await next_event_frame(frames)
        await revoke_token(redis, claims["jti"], claims["exp"])
        await publish(redis, "user.logged_out", {"userId": str(user), "allSessions": False})
        error = await next_event_frame(frames, 5)
        assert error.event == "error" and error.json["payload"]["code"] == "TOKEN_INVALID"


# -- `paysys events tail --as-user` ----------------------------------------------------------------
async def test_events_tail_shows_what_a_users_socket_would_receive(
    redis_private: RedisServer, redis: Redis
) -> None:
    user = uuid.uuid4()
    out = io.StringIO()
    settings = Settings(redis_url=redis_private.url)
    view = socket_view(str(user), "CUSTOMER")
    tail = asyncio.create_task(tail_events(settings, None, count=2, out=out, view=view))
    deadline = time.monotonic() + 10
    while int(await redis.execute_command("PUBSUB", "NUMPAT")) < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    mine = EventEnvelope(type="payment.created", source="t", data=payment_data(user, None))
    other = EventEnvelope(type="config.updated", source="t", data={"key": "k"})
    for event in (other, mine):
        await redis.publish(channel(event.type), json.dumps(event.to_wire()))
    assert await asyncio.wait_for(tail, 10) == 2
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["payload"]["eventType"] == "payment:created"
    bad = CliRunner().invoke(events_cli, ["tail", "--as-user", "nope"])
    assert bad.exit_code == 2 and "--as-user" in bad.output
    bad = CliRunner().invoke(events_cli, ["tail", "--as-user", str(user), "--role", "x"])
    assert bad.exit_code == 2
