"""The gateway's own abuse resistance (api-contracts §2.1), in-process against a real echo
upstream process: bodies are read before anything goes upstream, one pool per service with a
bounded wait, and at most N requests in flight per client."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from paysys.core.config import Settings
from paysys.core.tokens import TokenCodec
from tests.support.gateway import EchoServer

KIB = 1024
MIB = 1024 * KIB

Message = dict[str, Any]


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoServer]:
    server = EchoServer.create("echo", tmp_path_factory.mktemp("echo-pools")).start()
    yield server
    server.stop()


def urls(echo: EchoServer) -> dict[str, Any]:
    return {f"{name}_service_url": [echo.url] for name in ("auth", "payments", "admin", "profile")}


def token() -> str:
    issued, _ = TokenCodec(Settings()).issue_access(
        user_id=uuid.uuid4(), email="u@example.com", name="U", role="CUSTOMER", sid="s"
    )
    return issued


class Call:
    """One request driven straight through the gateway's ASGI app: the test decides when each
    piece of the body arrives (or that the client goes away) and from which address."""

    def __init__(
        self,
        app: Any,
        method: str,
        path: str,
        *,
        client: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        raw = {"authorization": f"Bearer {token()}", **(headers or {})}
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path.partition("?")[0],
            "raw_path": path.partition("?")[0].encode(),
            "query_string": path.partition("?")[2].encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in raw.items()],
            "client": (client, 40000),
            "server": ("127.0.0.1", 3000),
        }
        self.task = asyncio.create_task(app(scope, self.incoming.get, self._send))

    def send(self, chunk: bytes, more: bool = True) -> None:
        self.incoming.put_nowait({"type": "http.request", "body": chunk, "more_body": more})

    def disconnect(self) -> None:
        self.incoming.put_nowait({"type": "http.disconnect"})

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def done(self, timeout: float = 10.0) -> Call:
        await asyncio.wait_for(self.task, timeout)
        return self

    async def cancel(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def calls() -> AsyncIterator[list[Call]]:
    """Every Call a test starts is ended with it (nothing left hanging on the echo server)."""
    started: list[Call] = []
    yield started
    for call in started:
        await call.cancel()


def start_upload(app: Any, calls: list[Call], headers: dict[str, str]) -> tuple[Call, str]:
    """A POST to the echo's upload route (its progress is readable by id), cleaned up after."""
    upload = uuid.uuid4().hex
    call = Call(app, "POST", f"/api/payments/upload/{upload}", headers=headers)
    calls.append(call)
    return call, upload


async def progress(echo: EchoServer, upload_id: str) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        return int((await client.get(f"{echo.url}/_progress/{upload_id}")).json()["received"])


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_body_still_arriving_holds_no_upstream_slot(
    app_client: Any, echo: EchoServer, calls: list[Call]
) -> None:
    """A client stalled inside a small body holds nothing upstream: with a one-slot payments
    pool another request to payments is answered at once, nothing of the stalled body has
    reached the service, and the body goes up whole once it is complete."""
    gw = await app_client("gateway", **urls(echo), gateway_pool_sizes=["payments=1"])
    proxy = gw.app.state.gateway.proxy
    stalled, upload = start_upload(gw.app, calls, {"content-length": str(3 * KIB)})
    stalled.send(b"a" * KIB)
    stalled.send(b"b" * KIB)
    await asyncio.sleep(0.3)
    assert proxy.clients["payments"].in_flight == 0
    started = time.monotonic()
    other = await gw.get("/api/payments/echo", headers={"authorization": f"Bearer {token()}"})
    assert other.status_code == 200 and time.monotonic() - started < 0.9
    assert await progress(echo, upload) == 0  # nothing forwarded while the client sends

    stalled.send(b"c" * KIB, more=False)
    await stalled.done()
    assert stalled.status == 200
    assert stalled.body.count(b'"bytes": 3072') == 1
    assert b'"chunks": 1' in stalled.body  # one write of the whole body
    assert proxy.clients["payments"].in_flight == 0


async def test_a_client_gone_mid_body_forwards_nothing(
    app_client: Any, echo: EchoServer, calls: list[Call]
) -> None:
    gw = await app_client("gateway", **urls(echo))
    call, upload = start_upload(gw.app, calls, {"transfer-encoding": "chunked"})
    call.send(b"x" * 100 * KIB)
    call.disconnect()
    await call.done()
    assert call.status is None  # no answer to a client that left
    await asyncio.sleep(0.2)
    assert await progress(echo, upload) == 0
    assert gw.app.state.gateway.proxy.in_flight.counts == {}


async def test_a_large_body_streams_only_after_its_first_64_kib(
    app_client: Any, echo: EchoServer, calls: list[Call]
) -> None:
    """Bodies over the buffer limit (avatars, §6) are streamed, but only once 64 KiB arrived."""
    gw = await app_client("gateway", **urls(echo))
    upload = uuid.uuid4().hex
    size = 2 * MIB
    call = Call(
        gw.app,
        "PUT",
        f"/api/profile?upload={upload}",  # the one route allowed over 1 MiB (8 MiB)
        headers={"content-length": str(size)},
    )
    calls.append(call)
    call.send(b"p" * 32 * KIB)
    await asyncio.sleep(0.3)
    assert await progress(echo, upload) == 0
    call.send(b"q" * 40 * KIB)  # 72 KiB in: now it streams
    await eventually(lambda: _received_at_least(echo, upload, 72 * KIB))
    sent = 72 * KIB
    piece = b"r" * 256 * KIB
    while sent + len(piece) < size:
        call.send(piece)
        sent += len(piece)
    call.send(b"s" * (size - sent), more=False)
    await call.done()
    assert call.status == 200 and f'"bytes": {size}'.encode() in call.body


async def test_a_chunked_body_over_the_buffer_limit_streams(
    app_client: Any, echo: EchoServer, calls: list[Call]
) -> None:
    """Size unknown (chunked): read up to the buffer limit, streamed once it proves larger."""
    gw = await app_client("gateway", **urls(echo), max_body_bytes=256 * KIB)
    upload = uuid.uuid4().hex
    call = Call(
        gw.app,
        "PUT",
        f"/api/profile?upload={upload}",
        headers={"transfer-encoding": "chunked"},
    )
    calls.append(call)
    for _ in range(4):
        call.send(b"c" * 64 * KIB)  # exactly the limit: may still be a small body
    await asyncio.sleep(0.3)
    assert await progress(echo, upload) == 0
    call.send(b"d")
    await eventually(lambda: _received_at_least(echo, upload, 256 * KIB + 1))
    call.send(b"e" * KIB, more=False)
    await call.done()
    assert call.status == 200 and f'"bytes": {256 * KIB + 1 + KIB}'.encode() in call.body


async def test_a_chunked_body_over_the_limit_is_refused_and_never_reaches_the_service(
    app_client: Any, echo: EchoServer, calls: list[Call]
) -> None:
    """The gateway's 413 (BodyLimitMiddleware) ends the body while the proxy is still reading
    it: the client gets its 413 and the service has received nothing at all."""
    gw = await app_client("gateway", **urls(echo))
    call, upload = start_upload(gw.app, calls, {"transfer-encoding": "chunked"})
    for _ in range(5):
        call.send(b"z" * 256 * KIB)  # 1.25 MiB, no Content-Length
    await call.done()
    assert call.status == 413 and b"PAYLOAD_TOO_LARGE" in call.body
    await asyncio.sleep(0.2)
    assert await progress(echo, upload) == 0
    assert gw.app.state.gateway.proxy.clients["payments"].in_flight == 0


async def _received_at_least(echo: EchoServer, upload: str, size: int) -> bool:
    return await progress(echo, upload) >= size


async def test_a_full_pool_answers_503_for_its_service_only(
    app_client: Any, echo: EchoServer, calls: list[Call]
) -> None:
    """A slow service fills its own pool: its next request waits at most GATEWAY_POOL_WAIT and
    gets 503 SERVICE_UNAVAILABLE with Retry-After: 1, while other services answer at once. A
    full pool is not the service failing: its circuit stays closed."""
    gw = await app_client(
        "gateway",
        **urls(echo),
        gateway_pool_sizes=["payments=2"],
        gateway_pool_wait=0.5,
        circuit_failure_threshold=2,
    )
    app = gw.app
    proxy = app.state.gateway.proxy
    hanging = [Call(app, "GET", "/api/payments/hang") for _ in range(2)]
    calls.extend(hanging)
    await eventually(_is(lambda: proxy.clients["payments"].in_flight == 2))

    bearer = {"authorization": f"Bearer {token()}"}
    started = time.monotonic()
    refused = await asyncio.gather(
        *(gw.get("/api/payments/echo", headers=bearer) for _ in range(3))
    )
    waited = time.monotonic() - started
    assert [r.status_code for r in refused] == [503, 503, 503]
    assert 0.45 <= waited < 3
    for response in refused:
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert "ratelimit" in response.headers  # counted, like any forwarded request
    started = time.monotonic()
    other = await gw.get("/api/profile/echo", headers=bearer)
    assert other.status_code == 200 and time.monotonic() - started < 0.45

    for call in hanging:
        await call.cancel()
    assert proxy.clients["payments"].in_flight == 0
    again = await gw.get("/api/payments/echo", headers=bearer)
    assert again.status_code == 200  # the circuit never opened
    assert proxy.pools["payments"].upstreams[0].state == "closed"


async def test_a_waiting_request_gets_the_slot_that_frees_up(
    app_client: Any, echo: EchoServer, calls: list[Call]
) -> None:
    gw = await app_client("gateway", **urls(echo), gateway_pool_sizes=["payments=1"])
    app = gw.app
    proxy = app.state.gateway.proxy
    hanging = Call(app, "GET", "/api/payments/hang")
    calls.append(hanging)
    await eventually(_is(lambda: proxy.clients["payments"].in_flight == 1))
    waiting = asyncio.create_task(
        gw.get("/api/payments/echo", headers={"authorization": f"Bearer {token()}"})
    )
    await asyncio.sleep(0.2)
    await hanging.cancel()
    assert (await waiting).status_code == 200


async def test_requests_in_flight_are_capped_per_client(
    app_client: Any, echo: EchoServer, calls: list[Call]
) -> None:
    """At most MAX_IN_FLIGHT_PER_CLIENT requests in flight per client (stalled bodies count),
    IPv6 per /64 → 429 RATE_LIMIT_EXCEEDED with Retry-After; other clients are unaffected."""
    gw = await app_client("gateway", **urls(echo), max_in_flight_per_client=2)
    app = gw.app
    proxy = app.state.gateway.proxy

    def stalled(client: str) -> Call:
        call = Call(
            app, "POST", "/api/payments/echo", client=client, headers={"content-length": "10"}
        )
        call.send(b"12345")
        calls.append(call)
        return call

    async def one(client: str) -> Call:
        call = Call(app, "GET", "/api/payments/echo", client=client)
        calls.append(call)
        return await call.done()

    v4 = [stalled("192.0.2.10"), stalled("192.0.2.10")]
    v6 = [stalled("2001:db8:1:2::1"), stalled("2001:db8:1:2::ffff")]
    await eventually(_is(lambda: sum(proxy.in_flight.counts.values()) == 4))

    over = await one("192.0.2.10")
    assert over.status == 429 and over.headers["retry-after"] == "1"
    assert b'"code":"RATE_LIMIT_EXCEEDED"' in over.body.replace(b" ", b"")
    assert (await one("2001:db8:1:2::abcd")).status == 429  # the same /64
    assert (await one("2001:db8:1:3::1")).status == 200  # another /64
    assert (await one("192.0.2.11")).status == 200  # another client

    v4[0].send(b"67890", more=False)
    assert (await v4[0].done()).status == 200
    assert (await one("192.0.2.10")).status == 200  # one slot free again
    for call in [v4[1], *v6]:
        call.disconnect()
        await call.done()
    assert proxy.in_flight.counts == {}


def _is(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check
