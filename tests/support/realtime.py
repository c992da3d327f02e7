"""Clients for the gateway's real-time endpoints (WebSocket `/ws`, SSE `/api/events/stream`) and
helpers to publish events straight into the stream, for the integration and e2e tests and the
bench. WebSocket client: the `websockets` library; SSE: httpx streaming."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Response

from paysys.core.config import Settings
from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.transport import STREAM, stream_fields
from paysys.core.tokens import TokenCodec


def ws_url(http_base: str, token: str | None = None, path: str = "/ws") -> str:
    url = http_base.replace("http://", "ws://", 1) + path
    return f"{url}?token={token}" if token else url


async def open_ws(url: str, **kwargs: Any) -> ClientConnection:
    """A client as a browser would connect (no compression offered unless asked)."""
    kwargs.setdefault("compression", None)
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("close_timeout", 2)
    return await connect(url, proxy=None, **kwargs)


async def refused(url: str, **kwargs: Any) -> Response:
    """The HTTP answer to a handshake that must be refused before the upgrade."""
    try:
        socket = await open_ws(url, **kwargs)
    except InvalidStatus as exc:
        return exc.response
    await socket.close()
    raise AssertionError(f"{url} was accepted")


def body_of(response: Response) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(bytes(response.body or b""))
    return parsed


async def recv_json(socket: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), timeout))
    return message


async def send_json(socket: ClientConnection, message: dict[str, Any]) -> None:
    await socket.send(json.dumps(message))


async def until(
    socket: ClientConnection,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 10.0,
) -> dict[str, Any]:
    """The first message matching `predicate` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = await recv_json(socket, timeout)
            if predicate(message):
                return message


async def close_code(socket: ClientConnection, timeout: float = 5.0) -> tuple[int, list[dict]]:
    """Read until the server closes; returns the close code and what came before it."""
    seen: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                seen.append(json.loads(await socket.recv()))
    except ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd else 1006), seen


async def quiet(socket: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Messages received within `seconds` (expected: none)."""
    got: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                got.append(json.loads(await socket.recv()))
    except TimeoutError:
        return got


def event_type_of(message: dict[str, Any]) -> str | None:
    payload = message.get("payload") or {}
    return payload.get("eventType") if message.get("type") == "event" else None


def mint(
    settings: Settings,
    role: str = "CUSTOMER",
    user_id: uuid.UUID | None = None,
    expiry: str | None = None,
    sid: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """An access token signed with the run's secret (optionally with its own lifetime)."""
    if expiry is not None:
        settings = settings.model_copy(update={"jwt_access_expiry": expiry})
    return TokenCodec(settings).issue_access(
        user_id=user_id or uuid.uuid4(),
        email=f"{role.lower()}@example.com",
        name=f"{role.title()} User",
        role=role,
        sid=sid or str(uuid.uuid4()),
    )


async def publish(
    redis: Redis, type_: str, data: dict[str, Any], actor: str | None = None
) -> tuple[str, EventEnvelope]:
    """XADD one event into the stream as the outbox relay would; returns (stream id, event)."""
    event = EventEnvelope(type=type_, source="test", data=data, actor_id=actor)
    stream_id = await redis.xadd(
        STREAM, stream_fields(str(event.id), type_, json.dumps(event.to_wire()))
    )
    return str(stream_id), event


def payment_data(sender: uuid.UUID | str, recipient: uuid.UUID | str | None) -> dict[str, Any]:
    return {
        "payment": {
            "id": str(uuid.uuid4()),
            "senderId": str(sender),
            "recipientId": str(recipient) if recipient else None,
            "amount": "10.00",
            "currency": "USD",
            "status": "pending",
            "type": "instant",
        }
    }


# -- SSE ---------------------------------------------------------------------------------------
@dataclass
class SseFrame:
    event: str | None = None
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


async def sse_frames(response: httpx.Response) -> AsyncIterator[SseFrame]:
    """Parse a text/event-stream body into frames (comment-only blocks included)."""
    current = SseFrame()
    touched = False
    async for line in response.aiter_lines():
        if line == "":
            if touched:
                yield current
            current, touched = SseFrame(), False
            continue
        touched = True
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            current.event = value
        elif name == "data":
            current.data = value if not current.data else current.data + "\n" + value
        elif name == "id":
            current.id = value
        elif name == "retry":
            current.retry = int(value)


@asynccontextmanager
async def sse(
    base: str, bearer: str | None = None, **params: str
) -> AsyncIterator[tuple[httpx.Response, AsyncIterator[SseFrame]]]:
    """An open event stream: (the response, its frames). `bearer`: the Authorization token;
    `header_*` keys: other headers; the rest: the query (e.g. `token=`, `types=`)."""
    headers = {k[7:].replace("_", "-"): v for k, v in params.items() if k.startswith("header_")}
    query = {k: v for k, v in params.items() if not k.startswith("header_")}
    if bearer:
        headers["authorization"] = f"Bearer {bearer}"
    timeout = httpx.Timeout(10.0, read=30.0)
    async with (
        httpx.AsyncClient(base_url=base, timeout=timeout) as client,
        client.stream("GET", "/api/events/stream", params=query, headers=headers) as response,
    ):
        if response.status_code != 200:
            await response.aread()  # a refusal: a JSON body
        yield response, sse_frames(response)


async def next_frame(frames: AsyncIterator[SseFrame], timeout: float = 10.0) -> SseFrame:
    return await asyncio.wait_for(anext(frames), timeout)


async def next_event_frame(frames: AsyncIterator[SseFrame], timeout: float = 10.0) -> SseFrame:
    """The next frame that is not a keep-alive comment."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await anext(frames)
            if frame.event is not None or frame.data:
                return frame
