"""The gateway app in-process (real Redis, a real echo upstream process): limits, revocation,
fail-open, failures, client address, routing edges."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any
from unittest.mock import ANY

import pytest
from redis.asyncio import Redis

from paysys.core.config import Settings
from paysys.core.revocation import REVOKED_JTI_KEY, REVOKED_SID_KEY, TOKEN_VERSION_KEY
from paysys.core.tokens import TokenCodec
from tests.support.gateway import EchoServer
from tests.support.servers import free_port


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoServer]:
    server = EchoServer.create("echo", tmp_path_factory.mktemp("echo")).start()
    yield server
    server.stop()


@pytest.fixture
async def redis() -> Any:
    client = Redis.from_url(Settings().redis_url)
    keys = [key async for key in client.scan_iter("gw:rl:*")]
    if keys:
        await client.delete(*keys)
    yield client
    await client.aclose()


def urls(echo: EchoServer, **override: list[str]) -> dict[str, Any]:
    base = {f"{name}_service_url": [echo.url] for name in ("auth", "payments", "admin", "profile")}
    base.update(override)
    return base


def issue(role: str = "CUSTOMER", user_id: uuid.UUID | None = None) -> tuple[str, Any]:
    return TokenCodec(Settings()).issue_access(
        user_id=user_id or uuid.uuid4(), email="u@example.com", name="U", role=role, sid="s"
    )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_rate_limit_headers_and_429(app_client: Any, echo: EchoServer, redis: Any) -> None:
    gw = await app_client("gateway", **urls(echo), rate_limit_max=3, rate_limit_window=60)
    token, _ = issue()
    seen = []
    for _ in range(4):
        r = await gw.get("/api/payments/echo", headers=bearer(token))
        seen.append(r)
    assert [r.status_code for r in seen] == [200, 200, 200, 429]
    first, last = seen[0], seen[-1]
    assert first.headers["ratelimit-policy"] == '"default";q=3;w=60'
    assert first.headers["ratelimit"].startswith('"default";r=2;t=')
    assert first.headers["x-ratelimit-limit"] == "3"
    assert [r.headers["x-ratelimit-remaining"] for r in seen] == ["2", "1", "0", "0"]
    assert 1 <= int(last.headers["retry-after"]) <= 60
    assert last.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert last.json()["error"]["requestId"] == last.headers["x-request-id"]
    # another user has a bucket of its own; anonymous callers count per IP
    other, _ = issue()
    assert (await gw.get("/api/payments/echo", headers=bearer(other))).status_code == 200
    anon = [(await gw.get("/api/auth/echo")).status_code for _ in range(4)]
    assert anon == [200, 200, 200, 429]
    # health, docs and metrics are never limited
    for path in ("/health/live", "/metrics", "/docs"):
        r = await gw.get(path)
        assert r.status_code == 200 and "ratelimit" not in r.headers


async def test_revoked_and_expired_tokens_are_refused_at_the_edge(
    app_client: Any, echo: EchoServer, redis: Any
) -> None:
    gw = await app_client("gateway", **urls(echo))
    token, claims = issue()
    assert (await gw.get("/api/profile/echo", headers=bearer(token))).status_code == 200
    await redis.set(REVOKED_JTI_KEY.format(claims["jti"]), "1", ex=60)
    r = await gw.get("/api/profile/echo", headers=bearer(token))
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_INVALID"

    # a token of an ended session (DELETE /api/auth/sessions/{id}) is refused too
    ended_sid = str(uuid.uuid4())
    session_token, _ = TokenCodec(Settings()).issue_access(
        user_id=uuid.uuid4(), email="u@example.com", name="U", role="CUSTOMER", sid=ended_sid
    )
    assert (await gw.get("/api/profile/echo", headers=bearer(session_token))).status_code == 200
    await redis.set(REVOKED_SID_KEY.format(ended_sid), "1", ex=60)
    r = await gw.get("/api/profile/echo", headers=bearer(session_token))
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_INVALID"

    # the user's token version went up (password change, role change, ...): tokens of an
    # older `ver` are refused, tokens of the current one (or a newer one) pass
    user = uuid.uuid4()
    old, _ = issue(user_id=user)
    assert (await gw.get("/api/profile/echo", headers=bearer(old))).status_code == 200
    await redis.set(TOKEN_VERSION_KEY.format(user), "1", ex=60)
    assert (await gw.get("/api/profile/echo", headers=bearer(old))).status_code == 401
    for version in (1, 2):
        newer, _ = TokenCodec(Settings()).issue_access(
            user_id=user,
            email="u@example.com",
            name="U",
            role="CUSTOMER",
            sid=f"s{version}",
            token_version=version,
        )
        assert (await gw.get("/api/profile/echo", headers=bearer(newer))).status_code == 200

    user = uuid.uuid4()
    expired_codec = TokenCodec(Settings(jwt_access_expiry="0s"))
    expired, _ = expired_codec.issue_access(
        user_id=user, email="u@example.com", name="U", role="CUSTOMER", sid="s3"
    )
    await asyncio.sleep(1.1)
    r = await gw.get("/api/profile/echo", headers=bearer(expired))
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_EXPIRED"
    # a cached token is refused once it expires
    short = TokenCodec(Settings(jwt_access_expiry="1s"))
    brief, _ = short.issue_access(user_id=user, email="u@example.com", name="U", role="X", sid="4")
    assert (await gw.get("/api/profile/echo", headers=bearer(brief))).status_code == 200
    await asyncio.sleep(2.1)
    r = await gw.get("/api/profile/echo", headers=bearer(brief))
    assert r.json()["error"]["code"] == "TOKEN_EXPIRED"
    r = await gw.get("/api/profile/echo", headers={"authorization": "Basic abc"})
    assert r.json()["error"]["code"] == "UNAUTHORIZED"


async def test_redis_down_fails_open_with_local_limiter(
    app_client: Any, echo: EchoServer, redis: Any, redis_server: Any
) -> None:
    gw = await app_client("gateway", **urls(echo), rate_limit_max=2)
    token, _ = issue()
    redis_server.stop()
    try:
        statuses = [
            (await gw.get("/api/payments/echo", headers=bearer(token))).status_code
            for _ in range(3)
        ]
        # still limited, by the per-process fallback
        assert statuses == [200, 200, 429]
        metrics = (await gw.get("/metrics")).text
        assert "paysys_gateway_ratelimit_fail_open_total" in metrics
        # Redis down degrades the gateway; it still serves, so it stays ready (§7, rev. 2)
        ready = await gw.get("/health/ready")
        assert ready.status_code == 200
        data = ready.json()["data"]
        assert data["status"] == "degraded"
        assert data["checks"]["redis"] == {"status": "down", "latencyMs": ANY}
    finally:
        redis_server.start()
    gw.app.state.gateway.proxy.limiter.outage.retry_now()  # skip the 1 s back-off
    other, _ = issue()
    r = await gw.get("/api/payments/echo", headers=bearer(other))
    assert r.status_code == 200
    assert gw.app.state.gateway.proxy.limiter.outage.down is False


async def test_routing_edges(app_client: Any, echo: EchoServer) -> None:
    gw = await app_client("gateway", **urls(echo))
    r = await gw.get("/api/unknown/thing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = await gw.get("/not-a-route")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = await gw.post("/health")
    assert r.status_code == 405 and r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    head = await gw.head("/api/auth/echo")
    assert head.status_code == 200 and head.content == b""
    assert (await gw.get("/api/auth/status/204")).status_code == 204
    assert (await gw.get("/api/auth/status/503")).status_code == 503  # passed through as is

    async def chunks() -> Any:
        for _ in range(4):
            yield b"x" * 1000

    r = await gw.post("/api/auth/echo", content=chunks())
    assert r.json()["bodyBytes"] == 4000
    # a streamed (not small) response is relayed chunk by chunk
    release = uuid.uuid4().hex
    import httpx

    httpx.post(f"{echo.url}/_release/{release}", timeout=5)
    r = await gw.get(f"/api/auth/download/{release}?size={3 * 1024 * 1024}")
    assert len(r.content) == 3 * 1024 * 1024
    docs = await gw.get("/openapi.json")
    assert docs.json()["openapi"] == "3.1.0"


async def test_405_from_the_merged_documents_methods_before_auth(
    app_client: Any, echo: EchoServer
) -> None:
    """api-contracts §1.4: a known path with a method it lacks → 405 with exactly its methods,
    answered by the gateway before auth and limits (as the service's router would); declared
    methods, and every method before the first document, are forwarded."""
    from paysys.core.allow import MethodTable

    gw = await app_client(
        "gateway", **urls(echo), openapi_cache_ttl=3600, upstream_probe_interval=3600
    )
    # The one refresh of the merged document (the echo's paths) is over: nothing replaces the
    # tables set below during the test.
    assert (await gw.get("/openapi.json")).status_code == 200
    proxy = gw.app.state.gateway.proxy
    # the echo documents declare GET…DELETE on their echo path
    assert proxy.methods.refusal("/api/echo/echo", "OPTIONS") == "GET, POST, PUT, PATCH, DELETE"
    proxy.set_methods(None)  # no document yet: forwarded
    assert (await gw.post("/api/auth/echo")).status_code == 200
    proxy.set_methods(MethodTable({"/api/auth/echo": ["get"], "/api/payments/{id}": ["get"]}))
    r = await gw.post("/api/auth/echo", headers={"origin": "http://localhost:4200"})
    assert (r.status_code, r.headers["allow"]) == (405, "GET")
    assert r.json()["error"] == {
        "code": "METHOD_NOT_ALLOWED",
        "message": "Method not allowed",
        "requestId": r.headers["x-request-id"],
    }
    assert r.headers["access-control-allow-origin"] == "http://localhost:4200"
    assert "ratelimit" not in r.headers  # before the rate limit
    assert (await gw.get("/api/auth/echo")).status_code == 200
    # before auth: no token needed to learn the methods of a Bearer path
    r = await gw.delete("/api/payments/123")
    assert (r.status_code, r.headers["allow"]) == (405, "GET")
    assert (await gw.get("/api/payments/123")).status_code == 401  # declared: on to auth
    assert (await gw.delete("/api/payments/1/2")).status_code == 401  # unknown: forwarded
    # a preflight is still answered first
    r = await gw.options(
        "/api/auth/echo",
        headers={"origin": "http://localhost:4200", "access-control-request-method": "POST"},
    )
    assert r.status_code == 204


async def test_dead_upstream_502_then_open_circuit_503(app_client: Any, echo: EchoServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = await app_client(
        "gateway", **urls(echo, payments_service_url=[dead]), circuit_failure_threshold=2
    )
    token, _ = issue()
    statuses = [
        (await gw.post("/api/payments/echo", headers=bearer(token), content=b"{}")).status_code
        for _ in range(3)
    ]
    assert statuses == [502, 502, 503]
    # One service down never makes the gateway unready (§7, rev. 2): its routes answer alone.
    ready = await gw.get("/health/ready")
    assert ready.status_code == 200
    data = ready.json()["data"]
    assert data["status"] == "degraded"
    assert data["checks"]["payments"] == {"status": "down", "latencyMs": ANY}
    assert data["checks"]["auth"]["status"] == "up"
    assert dead.rsplit(":", 1)[1] not in ready.text  # no internal URL, host or port


async def test_get_retried_on_another_url_post_not(app_client: Any, echo: EchoServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = await app_client(
        "gateway",
        **urls(echo, payments_service_url=[dead, echo.url]),
        circuit_failure_threshold=50,
        upstream_probe_interval=3600,
    )
    token, _ = issue()
    gets = [
        (await gw.get("/api/payments/echo", headers=bearer(token))).status_code for _ in range(4)
    ]
    assert gets == [200] * 4
    # Until the readiness probe notices, a dead URL looks healthy: a POST that lands on it is
    # answered 502 and never replayed elsewhere (it might have been processed).
    gateway = gw.app.state.gateway
    await gateway.probe_all()
    assert [u.ready for u in gateway.pools["payments"].upstreams] == [False, True]
    for upstream in gateway.pools["payments"].upstreams:
        upstream.ready = True
    posts = sorted(
        [
            (await gw.post("/api/payments/echo", headers=bearer(token), content=b"1")).status_code
            for _ in range(2)
        ]
    )
    assert posts == [200, 502]


async def test_upstream_timeout_504(app_client: Any, echo: EchoServer) -> None:
    gw = await app_client("gateway", **urls(echo), upstream_timeout=0.3)
    started = time.perf_counter()
    r = await gw.get("/api/auth/hang")
    assert r.status_code == 504 and r.json()["error"]["code"] == "GATEWAY_TIMEOUT"
    assert time.perf_counter() - started < 2


async def test_trusted_proxy_client_address(app_client: Any, echo: EchoServer, redis: Any) -> None:
    gw = await app_client(
        "gateway",
        **urls(echo),
        trusted_proxies=["127.0.0.0/8", "10.1.0.0/16"],
        auth_rate_limit_max=1,
    )
    r = await gw.get(
        "/api/auth/echo",
        headers={
            "x-forwarded-for": "6.6.6.6, 203.0.113.9, 10.1.2.3",
            "x-forwarded-proto": "https",
            "x-forwarded-host": "api.example.com",
        },
    )
    headers = dict(r.json()["headers"])
    assert headers["x-real-ip"] == "203.0.113.9"  # right-most untrusted hop
    assert headers["x-forwarded-for"] == "203.0.113.9, 10.1.2.3, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == "api.example.com"
    # the login bucket follows the resolved client, not the proxy
    one = await gw.post("/api/auth/login", headers={"x-forwarded-for": "198.51.100.1"})
    two = await gw.post("/api/auth/login", headers={"x-forwarded-for": "198.51.100.1"})
    three = await gw.post("/api/auth/login", headers={"x-forwarded-for": "198.51.100.2"})
    assert [one.status_code, two.status_code, three.status_code] == [200, 429, 200]
    assert two.headers["ratelimit-policy"] == '"auth-login";q=1;w=60'


async def test_ipv6_clients_share_limits_per_64(
    app_client: Any, echo: EchoServer, redis: Any
) -> None:
    """api-contracts §2.1: rate-limit keys use the client identity, IPv6 per /64."""
    gw = await app_client(
        "gateway", **urls(echo), trusted_proxies=["127.0.0.0/8"], auth_rate_limit_max=1
    )

    async def login(ip: str) -> int:
        r = await gw.post("/api/auth/login", headers={"x-forwarded-for": ip})
        return int(r.status_code)

    first = await login("2001:db8:aa:1::1")
    same_64 = await login("2001:DB8:AA:1:ffff:ffff:ffff:ffff")
    other_64 = await login("2001:db8:aa:2::1")
    assert [first, same_64, other_64] == [200, 429, 200]
    r = await gw.get("/api/auth/echo", headers={"x-forwarded-for": "2001:DB8:AA:1::5"})
    assert dict(r.json()["headers"])["x-real-ip"] == "2001:db8:aa:1::5"  # the address itself


async def test_redis_pipe_script_reload_select_and_timeouts(redis: Any) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from paysys.core.redis import RedisPipe
    from paysys.gateway.ratelimit import Policy, RateLimiter

    url = Settings().redis_url.rsplit("/", 1)[0] + "/3"
    limiter = RateLimiter(Redis.from_url(url), url=url)
    policy = Policy("default", 2, 60)
    await limiter.redis.script_flush()  # the next call meets NOSCRIPT and loads it
    first = await limiter.hit("pipe-test", policy)
    assert first.allowed and first.remaining == 1
    assert await limiter.redis.zcard("gw:rl:pipe-test") == 1  # written to db 3
    with pytest.raises(Exception, match="ERR"):
        await limiter.pipe.call(b"NOT-A-COMMAND")  # type: ignore[union-attr]
    await limiter.redis.delete("gw:rl:pipe-test")
    limiter.close()
    await limiter.redis.aclose()
    with pytest.raises(ValueError):
        RedisPipe("rediss://127.0.0.1:6379/0")
    assert RateLimiter(redis, url="unix:///tmp/redis.sock").pipe is None

    # a server that accepts but never answers: the call fails after the timeout
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100_000)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = RedisPipe(f"redis://user:pw@127.0.0.1:{port}/0", timeout=0.3)
    started = time.perf_counter()
    with pytest.raises(RedisConnectionError):
        await pipe.call(b"PING")  # AUTH never answered
    assert time.perf_counter() - started < 2
    # Requests arriving meanwhile share the one failing attempt instead of queueing theirs.
    started = time.perf_counter()
    results = await asyncio.gather(*(pipe.call(b"PING") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results)
    assert time.perf_counter() - started < 0.3 * 3
    pipe.close()
    server.close()
    await server.wait_closed()
