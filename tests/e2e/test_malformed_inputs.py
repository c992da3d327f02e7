"""No input is ever a 5xx (api-contracts §1.3): a catalogue of malformed inputs sent to every
operation of the gateway's merged `/openapi.json`, as an ADMIN and anonymously, over the real
gateway and services.

Every answer must be a 4xx in the error envelope with the request id (or a 2xx the operation
documents), never a 5xx. The catalogue is compact (a few cases per part of a request) so the
whole walk stays well under a minute on a loaded machine; requests run a few at a time.
Operations that end a token or change the caller (logout, password change) get a throwaway
user's token per request; ids in paths are random UUIDs (absent resources), so nothing real is
deleted or changed. The rate-limit buckets are emptied between operations: a 429 would hide
what the service answers.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from redis.asyncio import Redis

from paysys.core.config import get_settings
from paysys.core.errors import STATUS_BY_CODE
from tests.support.admin import admin_and_token, bearer, insert_user, session_token
from tests.support.servers import Stack

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# Operations that end or change the caller's own session or account.
SELF_CHANGING = {
    ("POST", "/api/auth/logout"),
    ("PUT", "/api/auth/password"),
    ("POST", "/api/auth/password"),
}
WEBHOOK = ("POST", "/api/payments/webhooks/psp")
CONCURRENCY = 6
DEADLINE_SECONDS = 55.0


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the template
    path_params: tuple[str, ...]
    query: dict[str, dict[str, Any]]  # name → schema
    has_body: bool
    documented: frozenset[int]  # the 2xx statuses it documents


@dataclass
class Case:
    name: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    headers: dict[str, Any] = field(default_factory=dict)


def operations(document: dict[str, Any]) -> list[Operation]:
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            params = operation.get("parameters", [])
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    path_params=tuple(p["name"] for p in params if p["in"] == "path"),
                    query={p["name"]: p.get("schema", {}) for p in params if p["in"] == "query"},
                    has_body="requestBody" in operation or (method.upper(), path) == WEBHOOK,
                    documented=frozenset(
                        int(code)
                        for code in operation.get("responses", {})
                        if code.isdigit() and code.startswith("2")
                    ),
                )
            )
    return found


def fill(op: Operation, value: str | None = None) -> str:
    path = op.path
    for name in op.path_params:
        path = path.replace("{" + name + "}", value if value is not None else str(uuid.uuid4()))
    return path


def _integer_params(op: Operation) -> list[str]:
    def is_int(schema: dict[str, Any]) -> bool:
        options = [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]
        return any(option.get("type") == "integer" for option in options)

    return [name for name, schema in op.query.items() if is_int(schema)]


JSON = {"content-type": "application/json"}
DEPTH = 10_000
BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("invalid UTF-8", b'{"name": "\xff\xfe\xc3("}', JSON),
    ("UTF-16 body", json.dumps({"name": "x"}).encode("utf-16"), JSON),
    ("NUL escape in a string", b'{"name": "a\\u0000b", "email": "\\u0000@x.io"}', JSON),
    ("raw NUL byte in a string", b'{"name": "a\x00b"}', JSON),
    ("lone surrogate", b'{"name": "\\ud800"}', JSON),
    ("duplicate keys", b'{"name": "a", "name": "b", "value": 1, "value": 2}', JSON),
    ("huge exponent", b'{"amount": 1e999999, "value": 1e999999, "days": 1e999999}', JSON),
    ("huge integer", b'{"amount": ' + b"9" * 5000 + b', "value": ' + b"9" * 5000 + b"}", JSON),
    ("NaN", b'{"amount": NaN, "value": -Infinity}', JSON),
    ("deep arrays", b"[" * DEPTH + b"]" * DEPTH, JSON),
    ("deep objects", b'{"value":' * DEPTH + b"1" + b"}" * DEPTH, JSON),
    ("a JSON string, not an object", b'"\\u0000"', JSON),
    ("wrong content type", b'{"name": "x"}', {"content-type": "text/plain"}),
    ("form body", b"name=x&value=%00", {"content-type": "application/x-www-form-urlencoded"}),
    ("content type with a latin-1 byte", b"{}", {"content-type": b"application/json; \xff"}),
]
HEADERS: list[tuple[str, dict[str, Any]]] = [
    ("latin-1 bytes in headers", {"x-request-id": b"\xe9t\xe9", "user-agent": b"\xff\xfe"}),
    ("latin-1 idempotency key and origin", {"idempotency-key": b"k\xff", "origin": b"\xff"}),
    ("huge header values", {"idempotency-key": "k" * 4000, "x-request-id": "r" * 4000}),
]
# Header bytes as a client may send them: `²` in latin-1 (read back as `²`) and in UTF-8.
SIGNATURES = [
    "t=²".encode("latin-1"),
    ("t=²,v1=" + "a" * 64).encode("latin-1"),
    ("t=²,v1=" + "a" * 64).encode(),
    ("t=٣,v1=" + "a" * 64).encode(),
    b"t=1e9,v1=",
    b"t=" + b"9" * 40 + b",v1=" + b"a" * 64,
    b"v1=\xff",
]


def catalogue(op: Operation) -> Iterator[Case]:
    """The malformed requests sent to one operation."""
    base = fill(op)
    for name, extra in HEADERS:
        yield Case(name, base, headers=extra)
    if op.has_body:
        for name, body, headers in BODIES:
            yield Case(name, base, body=body, headers=headers)
    if op.path_params:
        for name, value in (
            ("NUL in the path", "%00"),
            ("non-ASCII digits as the id", quote("١٢٣")),
            ("latin-1 escape in the path", "%FF%FE"),
            ("oversized id", "a" * 3000),
            ("long number as the id", "9" * 400),
        ):
            yield Case(name, fill(op, value))
    for param in op.query:
        yield Case(f"NUL in query {param}", base, query=[(param, "\x00")])
    for param in _integer_params(op):
        for digit in ("²", "٣", "1" * 400, "-1"):
            yield Case(f"{param}={digit}", base, query=[(param, digit)])
    if op.query:
        yield Case("unknown and repeated query parameters", base, query=[("zz", "1")] * 2)
        yield Case("query with a latin-1 escape", base + "?" + next(iter(op.query)) + "=%FF")


def check(op: Operation, case: Case, response: httpx.Response, who: str) -> str | None:
    """What is wrong with the answer, if anything."""
    where = f"{who} {op.method} {op.path} [{case.name}] → {response.status_code}"
    status = response.status_code
    rid = response.headers.get("x-request-id")
    if status >= 500:
        return f"{where}: server error {response.text[:300]}"
    if not rid:
        return f"{where}: no X-Request-ID"
    if 200 <= status < 300:
        return None if status in op.documented else f"{where}: undocumented success"
    if not 400 <= status < 500:
        return f"{where}: unexpected status"
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"{where}: not the error envelope: {response.text[:200]}"
    if STATUS_BY_CODE.get(error.get("code")) != status:
        return f"{where}: code {error.get('code')} does not belong to {status}"
    if error.get("requestId") != rid:
        return f"{where}: requestId {error.get('requestId')} != {rid}"
    if status == 405 and not response.headers.get("allow"):
        return f"{where}: 405 without Allow"
    return None


async def _empty_rate_limits(redis: Redis) -> None:
    keys = [key async for key in redis.scan_iter("gw:rl:*", count=1000)]
    if keys:
        await redis.delete(*keys)


async def _throwaway_token() -> dict[str, str]:
    return bearer(await session_token(await insert_user()))


async def walk(
    client: httpx.AsyncClient,
    ops: list[Operation],
    auth: Callable[[Operation], Any],
    who: str,
    redis: Redis,
) -> tuple[list[str], int]:
    problems: list[str] = []
    sent = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def send(op: Operation, case: Case) -> None:
        nonlocal sent
        headers = {**(await auth(op)), **case.headers}
        async with gate:
            response = await client.request(
                op.method, case.path, params=case.query, content=case.body, headers=headers
            )
        sent += 1
        problem = check(op, case, response, who)
        if problem:
            problems.append(problem)

    for op in ops:
        await _empty_rate_limits(redis)
        await asyncio.gather(*(send(op, case) for case in catalogue(op)))
    return problems, sent


async def test_every_operation_answers_malformed_inputs_without_a_5xx(stack: Stack) -> None:
    started = time.monotonic()
    gateway = stack.url("gateway")
    document = httpx.get(f"{gateway}/openapi.json", timeout=20).json()
    ops = operations(document)
    assert len(ops) >= 40, [f"{op.method} {op.path}" for op in ops]
    _, admin = await admin_and_token()
    redis = Redis.from_url(get_settings().redis_url)

    async def as_admin(op: Operation) -> dict[str, str]:
        return await _throwaway_token() if (op.method, op.path) in SELF_CHANGING else admin

    async def anonymous(op: Operation) -> dict[str, str]:
        return {}

    try:
        async with httpx.AsyncClient(base_url=gateway, timeout=20) as client:
            problems, sent = await walk(client, ops, as_admin, "ADMIN", redis)
            anon_problems, anon_sent = await walk(client, ops, anonymous, "anonymous", redis)
            # The webhook's own header: a non-ASCII timestamp is a malformed signature.
            for value in SIGNATURES:
                r = await client.post(
                    WEBHOOK[1], content=b"{}", headers={**JSON, "psp-signature": value}
                )
                assert r.status_code == 400, (value, r.text)
                assert r.json()["error"]["code"] == "INVALID_SIGNATURE", (value, r.text)
    finally:
        await _empty_rate_limits(redis)
        await redis.aclose()
    problems += anon_problems
    assert not problems, "\n".join(problems[:40])
    assert sent + anon_sent > 600  # the walk really ran
    elapsed = time.monotonic() - started
    print(f"{sent + anon_sent} requests in {elapsed:.1f} s")
    assert elapsed < DEADLINE_SECONDS
