"""The server protocol every process runs (`paysys.cli.serve.server_options`), over a real socket:
responses whole, large streamed bodies intact, keep-alive kept, the coalescing transport in use."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import uvicorn

from paysys.cli.serve import server_options
from paysys.core.serving import (
    FLUSH_AT,
    CoalescingHttpToolsProtocol,
    CoalescingTransport,
    TerminatingWebSocketProtocol,
)
from tests.support.servers import free_port

CHUNK = b"x" * (FLUSH_AT // 2 + 1)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(5):  # chunked, several flushes' worth, some written in one loop step
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"end"})
        return
    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def test_services_are_served_through_the_coalescing_protocol() -> None:
    port = free_port()
    options = server_options("127.0.0.1", port)
    assert options["http"] is CoalescingHttpToolsProtocol
    # WebSockets (the gateway's /ws, api-contracts §9.5): no compression, 4 KiB messages,
    # pings every WS_PING_INTERVAL answered within WS_PONG_TIMEOUT; the real-socket tests of
    # the protocol are in test_gateway_realtime.py.
    assert options["ws"] is TerminatingWebSocketProtocol
    assert options["ws_per_message_deflate"] is False and options["ws_max_size"] == 4096
    assert (options["ws_ping_interval"], options["ws_ping_timeout"]) == (30.0, 10.0)
    options.update(factory=True, loop="asyncio", log_level="warning")
    server = uvicorn.Server(uvicorn.Config(lambda: app, **options))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            first = await client.get("/small")
            assert first.status_code == 200 and first.json() == {"ok": True}
            (connection,) = server.server_state.connections
            assert isinstance(connection.transport, CoalescingTransport)
            streamed = await client.get("/stream")
            assert streamed.content == CHUNK * 5 + b"end"
            again = await client.get("/small")  # the same kept-alive connection
            assert again.json() == {"ok": True}
            assert server.server_state.connections == {connection}
    finally:
        server.should_exit = True
        await task
