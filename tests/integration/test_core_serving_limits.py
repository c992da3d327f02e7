"""The limits every paysys HTTP server enforces (api-contracts §2.1), over real sockets and the
real `server_options()`: absolute header/body deadlines (408), header block size (431), idle
keep-alive, open connections per client IP and per process (503). Small limits keep it fast."""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest.mock import ANY

import uvicorn

from paysys.cli.serve import server_options
from paysys.core.config import Settings, get_settings
from paysys.core.edgelimits import EdgeLimits, settings_limits
from paysys.core.serving import CoalescingHttpToolsProtocol
from tests.support.servers import free_port

DEADLINE = 0.5  # seconds, for headers, bodies and keep-alive alike
SLACK = 0.6  # scheduling on a loaded 2-core machine

seen: list[str] = []  # what the app observed, per test


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/early":  # answers before reading the body
        await _respond(send, 401, b"no")
        return
    if path == "/started":  # starts its answer, then reads the body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            seen.append("disconnect")
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if path == "/started":
        await send({"type": "http.response.body", "body": b"done"})
        return
    await _respond(send, 200, b"ok:%d" % len(body))


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def small_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "request_header_timeout": DEADLINE,
        "request_body_timeout": DEADLINE,
        "keep_alive_timeout": DEADLINE,
        "max_header_bytes": 4096,
        "max_connections_per_client": 3,
        "gateway_max_connections": 50,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[int]:
    seen.clear()
    port = free_port()
    options = server_options("127.0.0.1", port, settings)
    options.update(loop="asyncio")
    server = uvicorn.Server(uvicorn.Config(lambda: app, **options))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_all(reader: asyncio.StreamReader, limit: float = 5.0) -> bytes:
    """Everything until the server closes the connection (bounded)."""
    try:
        return await asyncio.wait_for(reader.read(), limit)
    except ConnectionResetError:
        return b""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, headers = head_of(head.rstrip(b"\r\n"))
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 5)
    return status, headers, body


def head_of(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    fields = (line.split(":", 1) for line in lines[1:] if line)
    return int(lines[0].split()[1]), {name.lower(): value.strip() for name, value in fields}


def parse(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, headers = head_of(head)
    return status, headers, json.loads(body)


async def trickle(writer: asyncio.StreamWriter, total: float) -> None:
    """One byte every 50 ms for `total` seconds, stopping quietly once the server closed."""
    deadline = time.monotonic() + total
    try:
        while time.monotonic() < deadline:
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)
    except (ConnectionError, OSError):
        return


async def test_the_real_defaults_are_wired_into_every_process() -> None:
    options = server_options("127.0.0.1", 3000, Settings(_env_file=None))  # type: ignore[call-arg]
    protocol = options["http"]
    assert issubclass(protocol, CoalescingHttpToolsProtocol)
    assert protocol.limits == EdgeLimits(
        header_timeout=10.0,
        body_timeout=30.0,
        max_header_bytes=16384,
        max_connections_per_client=256,
    )
    assert options["timeout_keep_alive"] == 5.0
    assert options["limit_concurrency"] == 4097  # uvicorn counts the connection asking too
    trusted = server_options(
        "127.0.0.1",
        3000,
        Settings(_env_file=None, trusted_proxies="10.244.0.0/16,fd00::/64"),  # type: ignore[call-arg]
    )
    assert [str(n) for n in trusted["http"].limits.uncapped] == ["10.244.0.0/16", "fd00::/64"]
    # Without explicit settings (`paysys serve`), the class is the importable one (uvicorn's
    # reload mode pickles it into its subprocess) and reads this process's settings.
    plain = server_options("127.0.0.1", 3000)
    assert plain["http"] is CoalescingHttpToolsProtocol
    assert pickle.loads(pickle.dumps(plain["http"])) is CoalescingHttpToolsProtocol
    assert settings_limits() == EdgeLimits.from_settings(get_settings())


async def test_headers_trickled_past_the_deadline_get_408_and_close() -> None:
    async with serving(small_settings()) as port:
        reader, writer = await connect(port)
        started = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        trickling = asyncio.create_task(trickle(writer, 5))
        raw = await read_all(reader)
        elapsed = time.monotonic() - started
        trickling.cancel()
        writer.close()
        status, headers, body = parse(raw)
        assert status == 408 and headers["connection"] == "close"
        assert body["error"]["code"] == "REQUEST_TIMEOUT"
        assert body["error"]["requestId"] == headers["x-request-id"]
        assert headers["x-content-type-options"] == "nosniff"
        assert DEADLINE <= elapsed < DEADLINE + SLACK  # absolute: the trickle did not extend it


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    async with serving(small_settings()) as port:
        reader, writer = await connect(port)
        started = time.monotonic()
        assert await read_all(reader) == b""
        assert DEADLINE <= time.monotonic() - started < DEADLINE + SLACK
        writer.close()


async def test_a_trickled_body_gets_408_and_the_app_sees_a_disconnect() -> None:
    async with serving(small_settings()) as port:
        reader, writer = await connect(port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nabc")
        started = time.monotonic()
        trickling = asyncio.create_task(trickle(writer, 5))
        raw = await read_all(reader)
        elapsed = time.monotonic() - started
        trickling.cancel()
        writer.close()
        status, headers, body = parse(raw)
        assert (status, body["error"]["code"]) == (408, "REQUEST_TIMEOUT")
        assert headers["connection"] == "close"
        assert DEADLINE <= elapsed < DEADLINE + SLACK
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == ["disconnect"]


async def test_a_late_body_after_the_answer_started_only_closes() -> None:
    async with serving(small_settings()) as port:
        reader, writer = await connect(port)
        writer.write(b"POST /started HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
        raw = await read_all(reader)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 200 ")
        assert b"partial" in raw and b"408" not in raw and b"done" not in raw


async def test_whole_requests_within_the_deadlines_are_served_on_one_connection() -> None:
    async with serving(small_settings()) as port:
        reader, writer = await connect(port)
        for _ in range(3):  # each request has its own deadlines: together they exceed one
            writer.write(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n")
            await asyncio.sleep(DEADLINE * 0.6)
            writer.write(b"abc")
            status, _, body = await read_response(reader)
            assert (status, body) == (200, b"ok:3")
        # pipelined: two requests in one write
        writer.write(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        assert (await read_response(reader))[0] == 200
        # a body larger than the header limit, then the start of the next request in the same
        # write: the body's bytes are not counted as the next request's headers
        body = b"b" * 6000
        head = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 6000\r\n\r\n"
        writer.write(head + body + b"GET /c HTTP/1.1\r\nHo")
        assert await read_response(reader) == (200, ANY, b"ok:6000")
        await asyncio.sleep(0.05)
        writer.write(b"st: t\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_idle_keep_alive_is_closed() -> None:
    async with serving(small_settings()) as port:
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        started = time.monotonic()
        assert await read_all(reader) == b""
        assert DEADLINE * 0.8 <= time.monotonic() - started < DEADLINE + SLACK
        writer.close()


async def test_keep_alive_is_rearmed_when_the_answer_came_before_the_body() -> None:
    async with serving(small_settings(request_body_timeout=30)) as port:
        reader, writer = await connect(port)
        writer.write(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n")
        assert (await read_response(reader))[0] == 401
        writer.write(b"data")  # the rest of the body, then nothing
        started = time.monotonic()
        assert await read_all(reader) == b""
        assert time.monotonic() - started < DEADLINE + SLACK  # not held for the body deadline
        writer.close()


async def test_header_blocks_over_the_limit_get_431() -> None:
    async with serving(small_settings()) as port:
        # just under the limit: served
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 3900 + b"\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.close()
        # complete but too large, in one write
        reader, writer = await connect(port)
        pads = b"X-Pad: " + b"a" * 2500 + b"\r\nX-Pad2: " + b"b" * 2500
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n" + pads + b"\r\n\r\n")
        status, headers, body = parse(await read_all(reader))
        assert (status, body["error"]["code"]) == (431, "HEADERS_TOO_LARGE")
        assert headers["connection"] == "close"
        writer.close()
        # a header that never ends, sent in pieces: refused once the limit is passed
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        for _ in range(5):  # just past the limit, without an end of line
            writer.write(b"z" * 1024)
            await writer.drain()
            await asyncio.sleep(0.02)
        status, _, body = parse(await read_all(reader))
        assert (status, body["error"]["code"]) == (431, "HEADERS_TOO_LARGE")
        writer.close()


async def test_connections_per_client_are_capped() -> None:
    async with serving(small_settings(request_header_timeout=30, keep_alive_timeout=30)) as port:
        kept = []
        for _ in range(3):
            reader, writer = await connect(port)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            kept.append((reader, writer))
        reader, writer = await connect(port)  # the fourth from the same address
        started = time.monotonic()
        assert await read_all(reader) == b""  # closed at once, no request read
        assert time.monotonic() - started < 1.0
        writer.close()
        kept.pop()[1].close()  # one closes: a new connection is accepted again
        await asyncio.sleep(0.1)
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.close()
        for _, other in kept:
            other.close()


async def test_trusted_proxies_are_not_capped() -> None:
    settings = small_settings(
        max_connections_per_client=1, trusted_proxies="127.0.0.0/8", keep_alive_timeout=30
    )
    async with serving(settings) as port:
        writers = []
        for _ in range(3):
            reader, writer = await connect(port)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            writers.append(writer)
        for writer in writers:
            writer.close()


async def test_the_process_wide_cap_answers_503_in_the_envelope() -> None:
    settings = small_settings(gateway_max_connections=2, keep_alive_timeout=30)
    async with serving(settings) as port:
        kept = []
        for _ in range(2):
            reader, writer = await connect(port)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            kept.append(writer)
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = parse(await read_all(reader))
        assert (status, body["error"]["code"]) == (503, "SERVICE_UNAVAILABLE")
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
        writer.close()
        for other in kept:
            other.close()


async def test_websocket_connections_leave_the_http_limits_behind() -> None:
    import websockets

    settings = small_settings(max_connections_per_client=2)
    async with (
        serving(settings) as port,
        websockets.connect(f"ws://127.0.0.1:{port}/ws") as first,
        websockets.connect(f"ws://127.0.0.1:{port}/ws") as second,
    ):
        await asyncio.sleep(DEADLINE * 2)  # past every HTTP deadline
        await first.ping()
        await second.ping()
        # the upgraded connections no longer count against the per-client cap
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.close()
