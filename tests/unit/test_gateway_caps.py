"""The gateway's body rule, per-client in-flight cap and per-service slots, with fakes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import ValidationError

from paysys.core.config import Settings, parse_pool_sizes
from paysys.gateway.bodies import STREAM_AFTER, ClientGone, StreamedBody, read_body
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


async def test_a_body_in_one_message_is_passed_as_is() -> None:
    assert await read_body(receiver(part(10, more=False)), 10, 1024) == b"x" * 10


async def test_a_small_body_in_pieces_is_read_whole() -> None:
    receive = receiver(part(300), part(300, fill=b"y"), part(0, more=False))
    body = await read_body(receive, None, 1024)
    assert body == b"x" * 300 + b"y" * 300
    assert len(receive.taken) == 3


async def test_a_body_of_exactly_the_limit_is_still_buffered() -> None:
    body = await read_body(receiver(part(512), part(512), part(0, more=False)), None, 1024)
    assert body == b"x" * 1024


async def test_an_unknown_size_body_streams_once_it_passes_the_limit() -> None:
    receive = receiver(part(600), part(600, fill=b"y"), part(100, fill=b"z", more=False))
    body = await read_body(receive, None, 1024)
    assert isinstance(body, StreamedBody)
    assert len(receive.taken) == 2  # nothing more read before the upstream asks for it
    assert await collect(body) == b"x" * 600 + b"y" * 600 + b"z" * 100


async def test_a_declared_large_body_streams_after_its_first_64_kib() -> None:
    receive = receiver(
        part(32 * KIB), part(31 * KIB), part(KIB), part(10 * KIB, more=False, fill=b"t")
    )
    body = await read_body(receive, 200 * KIB, 100 * KIB)
    assert isinstance(body, StreamedBody)
    assert len(receive.taken) == 3  # exactly STREAM_AFTER bytes read
    assert sum(len(c) for c in body.head) == STREAM_AFTER
    assert await collect(body) == b"x" * 64 * KIB + b"t" * 10 * KIB


async def test_a_client_gone_before_its_body_ended_gives_nothing() -> None:
    assert await read_body(receiver(DISCONNECT), 10, 1024) is None
    assert await read_body(receiver(part(5), DISCONNECT), 10, 1024) is None


async def test_a_client_gone_while_streaming_marks_the_body() -> None:
    body = await read_body(receiver(part(2000), DISCONNECT), None, 1024)
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
    assert await client.acquire()
    assert client.in_flight == 1
    started = time.monotonic()
    assert not await client.acquire()  # full for the whole wait
    assert 0.15 <= time.monotonic() - started < 1
    waiter = asyncio.create_task(client.acquire())
    await asyncio.sleep(0.05)
    client.release()
    assert await waiter  # the freed slot went to the waiting request
    client.release()
    assert client.in_flight == 0


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
