"""The coalescing transport under uvicorn's protocol: one write per loop step, nothing lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from paysys.core.serving import FLUSH_AT, CoalescingTransport


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
