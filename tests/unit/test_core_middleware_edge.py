"""Body limits per route (1 MiB, 8 MiB for the profile update), the gateway's answer-here mode,
and trailing slashes served like the path without them (api-contracts §1.3, §2.1, §6)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from paysys.core.middleware import (
    BodyLimitMiddleware,
    BodyTooLarge,
    TrailingSlashMiddleware,
    route_body_limits,
)

MIB = 1024 * 1024


def scope(method: str, path: str, length: int | None = None, raw: bytes | None = None) -> dict:
    """A request scope; without `length` the body is chunked (Transfer-Encoding)."""
    headers = (
        [(b"transfer-encoding", b"chunked")]
        if length is None
        else [(b"content-length", str(length).encode())]
    )
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": raw if raw is not None else path.encode(),
        "headers": headers,
    }


class Recorder:
    """An inner app that reads the whole body and answers 200; records what it saw."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.called = False
        self.scope: dict[str, Any] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        self.scope = scope
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})


def chunks(total: int, size: int = 256 * 1024) -> Any:
    messages = [] if total else [{"type": "http.request", "body": b"", "more_body": False}]
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        messages.append({"type": "http.request", "body": b"x" * piece, "more_body": sent < total})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


class Sent(list[dict[str, Any]]):
    async def __call__(self, message: dict[str, Any]) -> None:
        self.append(message)

    @property
    def status(self) -> int:
        return int(self[0]["status"])

    def error(self) -> dict[str, Any]:
        return dict(json.loads(self[1]["body"])["error"])


LIMITS = route_body_limits(8 * MIB)


@pytest.mark.parametrize(
    ("method", "path", "length", "status"),
    [
        ("POST", "/api/payments", MIB + 1, 413),
        ("PUT", "/api/profile", MIB + 1, 200),
        ("PATCH", "/api/profile/", 8 * MIB, 200),
        ("PUT", "/api/profile", 8 * MIB + 1, 413),
        ("PUT", "/api/profile/preferences", MIB + 1, 413),
        ("POST", "/api/profile", MIB + 1, 413),
    ],
)
async def test_declared_lengths_are_checked_per_route(
    method: str, path: str, length: int, status: int
) -> None:
    inner = Recorder()
    sent = Sent()
    middleware = BodyLimitMiddleware(inner, MIB, routes=LIMITS)
    await middleware(scope(method, path, length), chunks(0 if status == 413 else 16), sent)
    assert sent.status == status
    assert inner.called is (status == 200)
    if status == 413:
        limit = "8 MiB" if (method, path) == ("PUT", "/api/profile") else "1 MiB"
        assert sent.error()["code"] == "PAYLOAD_TOO_LARGE"
        assert sent.error()["message"] == f"Request body exceeds {limit}"


async def test_streamed_overflow_raises_for_the_services_handler() -> None:
    middleware = BodyLimitMiddleware(Recorder(), MIB, routes=LIMITS)
    with pytest.raises(BodyTooLarge) as raised:
        await middleware(scope("POST", "/api/payments"), chunks(MIB + 1), Sent())
    assert raised.value.status_code == 413 and raised.value.detail == "Request body exceeds 1 MiB"
    # the profile update streams up to its own limit
    inner = Recorder()
    sent = Sent()
    await BodyLimitMiddleware(inner, MIB, routes=LIMITS)(
        scope("PUT", "/api/profile"), chunks(3 * MIB), sent
    )
    assert sent.status == 200 and sum(len(m.get("body", b"")) for m in inner.received) == 3 * MIB


async def test_gateway_mode_answers_413_and_the_app_sees_a_disconnect() -> None:
    inner = Recorder()
    sent = Sent()
    middleware = BodyLimitMiddleware(inner, MIB, routes=LIMITS, disconnect=True)
    await middleware(scope("POST", "/api/payments"), chunks(2 * MIB), sent)
    assert sent.status == 413 and sent.error()["code"] == "PAYLOAD_TOO_LARGE"
    assert len(sent) == 2  # the app's own answer was dropped
    assert inner.received[-1] == {"type": "http.disconnect"}
    # a body within the limit passes untouched
    inner, sent = Recorder(), Sent()
    await middleware(scope("POST", "/api/payments"), chunks(MIB), sent)
    assert sent.status == 200 and sent[1]["body"] == b"inner"


async def test_gateway_mode_after_the_answer_started_only_cuts_the_body() -> None:
    class AnswersFirst(Recorder):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            message: dict[str, Any] = {"more_body": True}
            while message.get("more_body"):
                message = await receive()
                self.received.append(message)
            await send({"type": "http.response.body", "body": b"late"})

    inner = AnswersFirst()
    sent = Sent()
    await BodyLimitMiddleware(inner, MIB, disconnect=True)(
        scope("POST", "/x"), chunks(2 * MIB), sent
    )
    assert [m["type"] for m in sent] == ["http.response.start"]  # no 413 in the middle of it
    assert inner.received[-1] == {"type": "http.disconnect"}


@pytest.mark.parametrize(
    ("path", "raw", "expected_path", "expected_raw"),
    [
        ("/api/auth/login/", b"/api/auth/login/", "/api/auth/login", b"/api/auth/login"),
        ("/api/auth/login", b"/api/auth/login", "/api/auth/login", b"/api/auth/login"),
        ("/", b"/", "/", b"/"),
        ("/api/x//", b"/api/x//", "/api/x/", b"/api/x/"),  # one slash only: then 404
        ("/api/a/b/", b"/api/a%2Fb/", "/api/a/b", b"/api/a%2Fb"),
        ("/api/a/", b"/api/a%2F", "/api/a/", b"/api/a%2F"),  # an encoded slash is data
    ],
)
async def test_one_trailing_slash_is_removed(
    path: str, raw: bytes, expected_path: str, expected_raw: bytes
) -> None:
    inner = Recorder()
    await TrailingSlashMiddleware(inner)(scope("GET", path, raw=raw), chunks(0), Sent())
    assert (inner.scope["path"], inner.scope["raw_path"]) == (expected_path, expected_raw)


async def test_a_request_without_a_body_is_not_wrapped() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((receive, send))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    sent = Sent()
    request = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    await BodyLimitMiddleware(app, MIB, routes=LIMITS, disconnect=True)(request, receive, sent)
    await BodyLimitMiddleware(app, MIB)(scope("POST", "/x", 10), receive, sent)
    assert seen == [(receive, sent), (receive, sent)]  # the hot path pays no wrapper


async def test_non_http_scopes_pass_untouched() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    lifespan = {"type": "lifespan"}
    await TrailingSlashMiddleware(app)(lifespan, None, None)
    await BodyLimitMiddleware(app, MIB)(lifespan, None, None)
    assert seen == [lifespan, lifespan]
