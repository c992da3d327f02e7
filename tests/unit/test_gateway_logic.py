"""Pure gateway logic: circuit breaker, pools, client address, auth rules, limits, OpenAPI merge."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from paysys.core.clientip import TrustedProxies
from paysys.core.config import Settings
from paysys.core.errors import AppError
from paysys.core.tokens import TokenCodec, VerifiedTokens
from paysys.gateway.openapi import OpenAPIAggregator, merge_documents
from paysys.gateway.proxy import requires_bearer
from paysys.gateway.ratelimit import Decision, LocalLimiter, Policy
from paysys.gateway.upstreams import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    ServicePool,
    Upstream,
    build_pools,
    set_ready,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_half_opens_with_a_single_probe() -> None:
    clock = Clock()
    up = Upstream("payments", "http://a/", threshold=3, open_seconds=10, clock=clock)
    assert up.base == "http://a"
    for _ in range(2):
        assert up.acquire()
        up.failure()
    assert up.state == CLOSED
    up.failure()
    assert up.state == OPEN and not up.available() and not up.acquire()
    clock.now += 10
    assert up.available()
    assert up.acquire() and up.state == HALF_OPEN
    assert not up.available() and not up.acquire()  # one probe at a time
    up.failure()  # the probe failed: open again for a full period
    assert up.state == OPEN and not up.acquire()
    clock.now += 10
    assert up.acquire()
    up.release()  # probe abandoned (client left): another may go
    assert up.acquire()
    up.success()
    assert up.state == CLOSED and up.failures == 0 and up.acquire()


def test_success_resets_the_consecutive_count() -> None:
    up = Upstream("auth", "http://a", threshold=2)
    up.failure()
    up.success()
    up.failure()
    assert up.state == CLOSED


def test_pool_round_robin_skips_open_and_prefers_ready() -> None:
    clock = Clock()
    pools = build_pools(
        {"payments": ["http://a", "http://b", "http://c", "http://a"]},
        threshold=1,
        open_seconds=5,
        clock=clock,
    )
    pool = pools["payments"]
    assert [u.base for u in pool.upstreams] == ["http://a", "http://b", "http://c"]
    picks = [pool.choose().base for _ in range(6)]  # type: ignore[union-attr]
    assert picks == ["http://a", "http://b", "http://c"] * 2
    a, b, c = pool.upstreams
    b.failure()  # open
    picks = {pool.choose().base for _ in range(6)}  # type: ignore[union-attr]
    assert picks == {"http://a", "http://c"}
    assert set_ready(c, False) is False
    assert {pool.choose().base for _ in range(4)} == {"http://a"}  # type: ignore[union-attr]
    assert pool.choose(exclude=(a,)) is c  # only a not-ready one left: still tried
    a.failure()
    c.failure()
    assert pool.choose() is None
    # readiness coming back shortens the open period of an open circuit
    assert set_ready(c, True) is True
    assert pool.choose() is c


def test_single_url_pool_and_empty_pool() -> None:
    up = Upstream("admin", "http://x", threshold=1, open_seconds=60)
    pool = ServicePool("admin", [up])
    assert pool.choose() is up
    up.failure()
    assert pool.choose() is None
    with pytest.raises(ValueError):
        ServicePool("admin", [])


def test_client_address() -> None:
    """The gateway's resolver is core.clientip's (more cases in test_core_clientip)."""
    none = TrustedProxies([])
    assert none.resolve("1.2.3.4", "9.9.9.9") == ("1.2.3.4", "1.2.3.4", False)
    trusted = TrustedProxies(["10.0.0.0/8", "192.168.1.1"])
    assert trusted.resolve("8.8.8.8", "9.9.9.9") == ("8.8.8.8", "8.8.8.8", False)
    assert trusted.resolve("10.0.0.5", None) == ("10.0.0.5", "10.0.0.5", True)
    assert trusted.resolve("10.0.0.5", "6.6.6.6, 7.7.7.7, 192.168.1.1") == (
        "7.7.7.7",
        "7.7.7.7, 192.168.1.1, 10.0.0.5",
        True,
    )
    assert trusted.resolve("10.0.0.5", "10.9.9.9") == ("10.9.9.9", "10.9.9.9, 10.0.0.5", True)
    # Not an address: the walk stops at the trusted hop that wrote it (the client is always
    # an IP address, never text a client chose).
    assert trusted.resolve("10.0.0.5", "junk, 10.1.1.1")[0] == "10.1.1.1"


@pytest.mark.parametrize(
    ("service", "path", "method", "expected"),
    [
        ("auth", "/api/auth/login", "POST", False),
        ("auth", "/api/auth/register", "POST", False),
        ("auth", "/api/auth/refresh", "POST", False),
        ("auth", "/api/auth/me", "GET", True),
        ("auth", "/api/auth/me/", "GET", True),
        ("auth", "/api/auth/logout", "POST", True),
        ("auth", "/api/auth/password", "PUT", True),
        ("auth", "/api/auth/sessions", "GET", True),
        ("auth", "/api/auth/sessions/abc", "DELETE", True),
        ("payments", "/api/payments/webhooks/psp", "POST", False),
        ("payments", "/api/payments/webhooks/psp", "GET", True),
        ("payments", "/api/payments", "GET", True),
        ("admin", "/api/admin/users", "GET", True),
        ("profile", "/api/profile", "GET", True),
        # The avatar image is public (api-contracts §2, §6), and only it: one segment, GET.
        ("profile", "/api/profile/avatar/0b6f4f1e-8d7e-4c1a-9a57-3f3c8e1f2a10", "GET", False),
        ("profile", "/api/profile/avatar/not-a-uuid/", "GET", False),
        ("profile", "/api/profile/avatar/x", "PUT", True),
        ("profile", "/api/profile/avatar/", "GET", True),
        ("profile", "/api/profile/avatar", "GET", True),
        ("profile", "/api/profile/avatar/x/../../preferences", "GET", True),
        ("profile", "/api/profile/avatar/..", "GET", True),
        ("profile", "/api/profile/avatars/x", "GET", True),
        ("profile", "/api/profile/preferences", "GET", True),
    ],
)
def test_requires_bearer(service: str, path: str, method: str, expected: bool) -> None:
    assert requires_bearer(service, path, method) is expected


def test_local_limiter_sliding_window() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    policy = Policy("default", 2, 10)
    assert limiter.hit("k", policy).allowed
    clock.now += 4
    second = limiter.hit("k", policy)
    assert second.allowed and second.remaining == 0
    third = limiter.hit("k", policy)
    assert not third.allowed and third.reset_ms == 6000
    clock.now += 6  # the first hit leaves the window
    assert limiter.hit("k", policy).allowed
    assert limiter.hit("other", policy).allowed
    limiter.MAX_KEYS = 2
    assert limiter.hit("third", policy).allowed  # the table is reset, never unbounded
    assert len(limiter._hits) == 1


def test_decision_headers() -> None:
    policy = Policy("auth-login", 10, 60)
    allowed = dict(Decision(True, 7, 41_200, policy).headers())
    assert allowed == {
        b"ratelimit-policy": b'"auth-login";q=10;w=60',
        b"ratelimit": b'"auth-login";r=7;t=42',
        b"x-ratelimit-limit": b"10",
        b"x-ratelimit-remaining": b"7",
        b"x-ratelimit-reset": b"42",
    }
    refused = dict(Decision(False, 0, 300, policy).headers())
    assert refused[b"retry-after"] == b"1"
    assert Decision(True, 1, 0, policy).reset_seconds == 0


def test_verified_tokens_cache() -> None:
    codec = TokenCodec(Settings())
    cache = VerifiedTokens(codec)
    token, _ = codec.issue_access(
        user_id=uuid.uuid4(), email="a@example.com", name="A", role="ADMIN", sid="s"
    )
    header = f"Bearer {token}".encode()
    first = cache.principal(header)
    assert cache.principal(header) is first  # second time from the cache
    with pytest.raises(AppError) as missing:
        cache.principal(None)
    assert missing.value.code == "UNAUTHORIZED"
    # an expired cached entry is dropped and the token re-checked (and refused)
    cache._cache[header] = type(first)(**{**_fields(first), "expires_at": 0})
    cache.principal(header)
    cache.MAX_ENTRIES = 1
    other, _ = codec.issue_access(
        user_id=uuid.uuid4(), email="b@example.com", name="B", role="VENDOR", sid="t"
    )
    cache.principal(f"Bearer {other}".encode())
    assert len(cache._cache) == 1


def _fields(principal: Any) -> dict[str, Any]:
    return {name: getattr(principal, name) for name in principal.__slots__}


def _doc(title: str, schema_title: str, tag: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "tags": [{"name": tag, "description": tag}],
        "paths": {
            f"/api/{tag}": {
                "get": {
                    "tags": [tag, "common"],
                    "responses": {"200": {"$ref": "#/components/responses/Ok"}},
                    "parameters": [{"$ref": "#/components/parameters/Page"}],
                },
                "parameters": [],
            },
            "/shared": {"get" if tag == "auth" else "post": {"responses": {}}},
        },
        "components": {
            "schemas": {"Error": {"title": schema_title}, "Same": {"type": "string"}},
            "responses": {
                "Ok": {
                    "description": "ok",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
            "parameters": {"Page": {"name": "page", "in": "query"}},
        },
    }


def test_merge_documents() -> None:
    merged = merge_documents(
        {"auth": _doc("auth", "A", "auth"), "payments": _doc("payments", "P", "payments")}
    )
    assert merged["openapi"] == "3.1.0"
    schemas = merged["components"]["schemas"]
    assert schemas["Error"] == {"title": "A"}
    assert schemas["payments_Error"] == {"title": "P"}
    assert schemas["Same"] == {"type": "string"}
    assert "payments_Same" not in schemas
    responses = merged["components"]["responses"]
    assert responses["Ok"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/Error"
    )
    # payments' Ok differs only through its renamed ref → renamed too, refs rewritten
    assert responses["payments_Ok"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/payments_Error"
    )
    op = merged["paths"]["/api/payments"]["get"]
    assert op["responses"]["200"]["$ref"] == "#/components/responses/payments_Ok"
    assert merged["components"]["parameters"] == {"Page": {"name": "page", "in": "query"}}
    assert set(merged["paths"]["/shared"]) == {"get", "post"}  # same path: operations united
    assert [t["name"] for t in merged["tags"]] == ["auth", "common", "payments"]
    clash = merge_documents({"a": _doc("a", "A", "auth"), "b": _doc("b", "B", "auth")})
    assert "get" in clash["paths"]["/api/auth"]
    assert "tags" not in merge_documents({})


async def test_aggregator_caches_and_rebuilds_on_change() -> None:
    pools = build_pools(
        {"auth": ["http://a"], "payments": ["http://b"]}, threshold=5, open_seconds=1
    )
    tables: list[Any] = []
    aggregator = OpenAPIAggregator(pools, ttl=3600, on_methods=tables.append)
    served = {"auth": _doc("auth", "A", "auth"), "payments": _doc("payments", "P", "payments")}
    fetches: list[str] = []

    async def fake_fetch(pool: ServicePool) -> bytes | None:
        fetches.append(pool.name)
        document = served.get(pool.name)
        return None if document is None else json.dumps(document).encode()

    aggregator._fetch = fake_fetch  # type: ignore[method-assign]
    first = json.loads(await aggregator.document())
    assert "/api/payments" in first["paths"]
    await aggregator.document()
    assert len(fetches) == 2  # cached within the TTL
    # each merged document hands the proxy its method table (405 + Allow, api-contracts §1.4)
    assert len(tables) == 1
    assert tables[0].refusal("/api/payments", "DELETE") == "GET"
    assert tables[0].refusal("/shared", "PUT") == "GET, POST"  # same path in two documents
    assert tables[0].refusal("/api/payments/new", "DELETE") is None  # unknown yet: forwarded
    served["payments"]["paths"]["/api/payments/new"] = {"get": {"responses": {}}}
    aggregator.invalidate()  # e.g. the probe saw payments come back after a restart
    assert "/api/payments/new" in json.loads(await aggregator.document())["paths"]
    assert len(tables) == 2 and tables[1].refusal("/api/payments/new", "DELETE") == "GET"
    del served["payments"]  # down: its last known document is kept
    aggregator.invalidate()
    assert "/api/payments/new" in json.loads(await aggregator.document())["paths"]
