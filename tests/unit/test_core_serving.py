"""The coalescing transport under uvicorn's protocol: one write per loop step, nothing lost."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from paysys.core.clientip import TrustedProxies, client_key
from paysys.core.edgelimits import EdgeLimits, refusal
from paysys.core.serving import FLUSH_AT, CoalescingHttpToolsProtocol, CoalescingTransport


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.eof = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def write_eof(self) -> None:
        self.eof = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else default


async def test_writes_of_one_loop_step_leave_in_one_write() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")  # empty writes are no-ops
    transport.write(b"body")
    assert real.writes == []
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nbody") + 7
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    transport.write(b"next")  # the next step starts a new batch
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"next"]


async def test_large_writes_go_out_at_once_in_order() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"head")
    transport.write(b"x" * FLUSH_AT)
    assert real.writes == [b"head" + b"x" * FLUSH_AT]  # flow control sees it now, not later
    transport.writelines([b"a", b"b"])
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"ab"]


async def test_close_and_eof_flush_first_abort_drops() -> None:
    loop = asyncio.get_running_loop()
    real = RecordingTransport()
    transport = CoalescingTransport(real, loop)
    transport.write(b"bye")
    transport.close()
    assert real.writes == [b"bye"] and real.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert real.writes == [b"bye"]

    real = RecordingTransport()
    transport = CoalescingTransport(real, loop)
    transport.write(b"half")
    transport.write_eof()
    assert real.writes == [b"half"] and real.eof

    real = RecordingTransport()
    transport = CoalescingTransport(real, loop)
    transport.write(b"lost")
    transport.abort()
    await asyncio.sleep(0)
    assert real.writes == [] and real.aborted


async def test_nothing_is_written_to_a_closing_transport() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"late")
    real.closed = True  # the peer went away before the loop step ended
    await asyncio.sleep(0)
    assert real.writes == []


@pytest.mark.parametrize("name", ["peername", "sockname"])
async def test_other_attributes_come_from_the_real_transport(name: str) -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    expected = ("127.0.0.1", 1234) if name == "peername" else None
    assert transport.get_extra_info(name) == expected
    assert transport.is_closing() is False


# --- the limits (core.edgelimits) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),  # same /64, same client
        ("::ffff:198.51.100.1", "198.51.100.1"),  # dual-stack socket
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_client_key_counts_ipv6_per_64(peer: str, key: str) -> None:
    assert client_key(peer) == key


def test_trusted_proxies_are_not_capped() -> None:
    limits = EdgeLimits(uncapped=TrustedProxies(["10.244.0.0/16", "fd00::/8", "garbage"]).networks)
    assert [str(n) for n in limits.uncapped] == ["10.244.0.0/16", "fd00::/8"]
    assert limits.client_of("10.244.3.4") is None
    assert limits.client_of("::ffff:10.244.3.4") is None
    assert limits.client_of("fd00::1") is None
    assert limits.client_of("10.245.0.1") == "10.245.0.1"
    assert limits.client_of("unix-socket") == "unix-socket"


def test_refusal_is_a_complete_enveloped_response_that_closes() -> None:
    raw = refusal(431, "HEADERS_TOO_LARGE", "Request headers too large")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert headers["x-content-type-options"] == "nosniff"
    payload = json.loads(body)
    assert payload["error"] == {
        "code": "HEADERS_TOO_LARGE",
        "message": "Request headers too large",
        "requestId": headers["x-request-id"],
    }


async def test_a_connection_over_the_client_cap_is_closed_and_ignored() -> None:
    config = uvicorn.Config(app=lambda *a: None, log_level="warning")
    config.load()
    state = ServerState()
    protocol_class = CoalescingHttpToolsProtocol.configured(
        EdgeLimits(max_connections_per_client=1)
    )
    loop = asyncio.get_running_loop()
    first = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
    first.connection_made(RecordingTransport())
    second_transport = RecordingTransport()
    second = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
    second.connection_made(second_transport)
    assert second_transport.closed
    second.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # ignored: no request runs
    assert not state.tasks and second_transport.writes == []
    second.connection_lost(None)
    first.connection_lost(None)  # its slot is free again
    third_transport = RecordingTransport()
    third = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
    third.connection_made(third_transport)
    assert not third_transport.closed
    third.connection_lost(None)


async def test_the_websocket_inbox_hands_items_over_in_order_to_its_reader() -> None:
    from paysys.core.serving import _Inbox

    inbox = _Inbox()
    assert inbox.empty()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert not inbox.empty()
    assert [await inbox.get(), await inbox.get()] == [1, 2]
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.put_nowait(3)
    assert await asyncio.wait_for(waiting, 1) == 3
    assert inbox.empty()
