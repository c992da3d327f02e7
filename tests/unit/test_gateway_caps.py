"""The gateway's body rule, per-client in-flight cap and per-service slots, with fakes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import ValidationError

from paysys.core.config import Settings, parse_pool_sizes
from paysys.gateway.bodies import STREAM_AFTER, ClientGone, StreamedBody, read_more
from paysys.gateway.inflight import InFlight
from paysys.gateway.pools import ServiceClient

KIB = 1024


def receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)
    taken: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = queue.pop(0)
        taken.append(message)
        return message

    receive.taken = taken  # type: ignore[attr-defined]
    return receive


def part(size: int, more: bool = True, fill: bytes = b"x") -> dict[str, Any]:
    return {"type": "http.request", "body": fill * size, "more_body": more}


DISCONNECT = {"type": "http.disconnect"}


async def collect(body: StreamedBody) -> bytes:
    return b"".join([chunk async for chunk in body])


async def test_a_small_body_in_pieces_is_read_whole() -> None:
    receive = receiver(part(300, fill=b"y"), part(0, more=False))
    body = await read_more(b"x" * 300, receive, None, 1024)
    assert body == b"x" * 300 + b"y" * 300
    assert len(receive.taken) == 2


async def test_a_body_of_exactly_the_limit_is_still_buffered() -> None:
    body = await read_more(b"x" * 512, receiver(part(512), part(0, more=False)), None, 1024)
    assert body == b"x" * 1024


async def test_an_unknown_size_body_streams_once_it_passes_the_limit() -> None:
    receive = receiver(part(600, fill=b"y"), part(100, fill=b"z", more=False))
    body = await read_more(b"x" * 600, receive, None, 1024)
    assert isinstance(body, StreamedBody)
    assert len(receive.taken) == 1  # nothing more read before the upstream asks for it
    assert await collect(body) == b"x" * 600 + b"y" * 600 + b"z" * 100


async def test_a_first_message_over_the_limit_streams_at_once() -> None:
    receive = receiver(part(10, more=False))
    body = await read_more(b"x" * 2000, receive, None, 1024)
    assert isinstance(body, StreamedBody) and receive.taken == []
    assert await collect(body) == b"x" * 2010


async def test_a_declared_large_body_streams_after_its_first_64_kib() -> None:
    receive = receiver(part(31 * KIB), part(KIB), part(10 * KIB, more=False, fill=b"t"))
    body = await read_more(b"x" * 32 * KIB, receive, 200 * KIB, 100 * KIB)
    assert isinstance(body, StreamedBody)
    assert len(receive.taken) == 2  # exactly STREAM_AFTER bytes read
    assert sum(len(c) for c in body.head) == STREAM_AFTER
    assert await collect(body) == b"x" * 64 * KIB + b"t" * 10 * KIB


async def test_a_client_gone_before_its_body_ended_gives_nothing() -> None:
    assert await read_more(b"12345", receiver(DISCONNECT), 10, 1024) is None


async def test_a_client_gone_while_streaming_marks_the_body() -> None:
    body = await read_more(b"x" * 2000, receiver(DISCONNECT), None, 1024)
    assert isinstance(body, StreamedBody)
    with pytest.raises(ClientGone):
        await collect(body)
    assert body.gone


def test_in_flight_counts_per_key_and_forgets_idle_keys() -> None:
    caps = InFlight(2)
    assert caps.enter("a") and caps.enter("a")
    assert not caps.enter("a")
    assert caps.enter("b")
    caps.leave("a")
    assert caps.enter("a")
    for key in ("a", "a", "b"):
        caps.leave(key)
    assert caps.counts == {}


async def test_service_slots_wait_bounded_and_hand_over() -> None:
    client = ServiceClient("payments", 1, wait=0.2)
    assert client.try_acquire()
    assert client.in_flight == 1 and not client.try_acquire()
    started = time.monotonic()
    assert not await client.acquire()  # full for the whole wait
    assert 0.15 <= time.monotonic() - started < 1
    assert not client.waiters  # the one that gave up left the queue
    first = asyncio.create_task(client.acquire())
    second = asyncio.create_task(client.acquire())
    await asyncio.sleep(0.05)
    client.release()
    assert not client.try_acquire()  # a newcomer never jumps the queue
    assert await first  # the freed slot went to the first waiting request
    client.release()
    assert await second
    client.release()
    assert client.in_flight == 0 and client.free == 1 and client.try_acquire()


async def test_a_waiting_request_that_goes_away_gives_its_slot_on() -> None:
    client = ServiceClient("payments", 1, wait=5)
    assert client.try_acquire()
    leaving = asyncio.create_task(client.acquire())
    staying = asyncio.create_task(client.acquire())
    await asyncio.sleep(0.02)
    client.release()  # handed to `leaving`...
    leaving.cancel()  # ...which is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert await staying  # the slot reached the next waiter
    waiting = asyncio.create_task(client.acquire())
    await asyncio.sleep(0.02)
    waiting.cancel()  # cancelled while still waiting: it leaves the queue
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not client.waiters
    client.release()
    assert client.in_flight == 0 and client.free == 1 and client.try_acquire()


def test_pool_sizes_default_and_overrides() -> None:
    settings = Settings(gateway_pool_size=50, gateway_pool_sizes="auth=8, payments=300")
    assert settings.pool_sizes() == {"auth": 8, "payments": 300, "admin": 50, "profile": 50}
    assert Settings().pool_sizes() == dict.fromkeys(("auth", "payments", "admin", "profile"), 128)


@pytest.mark.parametrize("entry", ["billing=3", "auth", "auth=0", "auth=x", "auth=-1"])
def test_a_wrong_pool_size_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="GATEWAY_POOL_SIZES"):
        parse_pool_sizes([entry])
    with pytest.raises(ValidationError):
        Settings(gateway_pool_sizes=entry)


@pytest.mark.parametrize(
    "field", [{"gateway_pool_size": 0}, {"gateway_pool_wait": 0}, {"max_in_flight_per_client": 0}]
)
def test_caps_must_be_positive(field: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**field)
