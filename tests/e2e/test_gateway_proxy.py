"""The gateway as a real process in front of real upstream processes: proxy mechanics.

Upstreams are the echo server of tests/support/gateway.py (one process per service), so
streaming, headers and failures are exercised over real sockets.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway import MIB, EchoServer, mint_token, upstream_env, wait_until
from tests.support.servers import Stack

SERVICES = ("auth", "payments", "admin", "profile")


@pytest.fixture(scope="module")
def echoes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, EchoServer]]:
    logdir = tmp_path_factory.mktemp("echo")
    servers = {name: EchoServer.create(name, logdir).start() for name in SERVICES}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def gateway(
    echoes: dict[str, EchoServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    env = {**os.environ, **upstream_env(echoes), "RATE_LIMIT_MAX": "100000"}
    env.pop("PORT", None)
    stack = Stack.build(env, tmp_path_factory.mktemp("gw-proxy"), ("gateway",))
    stack.start()
    yield stack.url("gateway")
    stack.stop()


def auth_headers(role: str = "CUSTOMER") -> dict[str, str]:
    return {"authorization": f"Bearer {mint_token(role)}"}


def test_every_route_family_is_forwarded_unchanged(gateway: str) -> None:
    with httpx.Client(base_url=gateway, timeout=10) as client:
        for service in SERVICES:
            role = "ADMIN" if service == "admin" else "CUSTOMER"
            r = client.post(
                f"/api/{service}/echo/a%2Fb/c?x=1&y=%20z&x=2",
                headers={
                    **auth_headers(role),
                    "content-type": "application/json",
                    "idempotency-key": "key-123",
                },
                content=b'{"hello": "world"}',
            )
            assert r.status_code == 200, r.text
            seen = r.json()
            assert seen["server"] == service
            assert seen["method"] == "POST"
            assert seen["rawPath"] == f"/api/{service}/echo/a%2Fb/c"
            assert seen["query"] == "x=1&y=%20z&x=2"
            assert seen["bodySha256"] == hashlib.sha256(b'{"hello": "world"}').hexdigest()
            headers = dict(seen["headers"])
            assert headers["content-type"] == "application/json"
            assert headers["idempotency-key"] == "key-123"
            assert headers["authorization"].startswith("Bearer ")


def test_header_handling(gateway: str) -> None:
    r = httpx.get(
        f"{gateway}/api/payments/echo",
        headers={
            **auth_headers(),
            "x-user-id": "00000000-0000-0000-0000-000000000001",
            "x-user-role": "ADMIN",
            "x-internal-token": "forged",
            "x-forwarded-for": "6.6.6.6",
            "x-real-ip": "6.6.6.6",
            "forwarded": "for=6.6.6.6",
            "connection": "x-drop-me",
            "x-drop-me": "hop",
            "keep-alive": "timeout=5",
            "x-custom": "kept",
        },
        timeout=10,
    )
    assert r.status_code == 200
    names = [name for name, _ in r.json()["headers"]]
    headers = dict(r.json()["headers"])
    for stripped in ("x-user-id", "x-user-role", "x-internal-token", "x-drop-me", "keep-alive"):
        assert stripped not in names
    assert "forwarded" not in names
    assert headers["x-forwarded-for"] == "127.0.0.1"  # the socket peer, not the spoofed hop
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == gateway.removeprefix("http://")
    assert headers["x-custom"] == "kept"
    assert names.count("x-request-id") == 1

    hop = httpx.get(f"{gateway}/api/payments/hop", headers=auth_headers(), timeout=10)
    assert hop.status_code == 200 and hop.text == "ok"
    assert "x-hop-secret" not in hop.headers
    assert "keep-alive" not in hop.headers
    assert hop.headers["x-end-to-end"] == "kept"


def test_request_id_round_trip(gateway: str) -> None:
    r = httpx.get(
        f"{gateway}/api/auth/echo", headers={"x-request-id": "trace-abc.123_X"}, timeout=10
    )
    assert r.headers["x-request-id"] == "trace-abc.123_X"
    assert dict(r.json()["headers"])["x-request-id"] == "trace-abc.123_X"
    # An invalid id is replaced, and the service sees the id the client is answered with.
    r = httpx.get(f"{gateway}/api/auth/echo", headers={"x-request-id": "bad id!"}, timeout=10)
    generated = r.headers["x-request-id"]
    assert generated != "bad id!"
    assert dict(r.json()["headers"])["x-request-id"] == generated


def test_five_mib_upload_is_streamed_not_buffered(
    gateway: str, echoes: dict[str, EchoServer]
) -> None:
    """PUT /api/profile is the one route whose bodies may pass 1 MiB (avatars, 8 MiB, §6)."""
    upload_id = uuid.uuid4().hex
    chunk = os.urandom(256 * 1024)
    total_chunks = 20  # 5 MiB
    digest = hashlib.sha256()
    seen_before_end: list[int] = []

    def body() -> Iterator[bytes]:
        for index in range(total_chunks):
            digest.update(chunk)
            yield chunk
            if index == total_chunks // 2:
                # Half sent: the upstream must already be receiving. A gateway that buffered
                # the whole body would forward nothing before the client finished.
                received = wait_until(
                    lambda: httpx.get(
                        f"{echoes['profile'].url}/_progress/{upload_id}", timeout=2
                    ).json()["received"],
                    timeout=15,
                )
                seen_before_end.append(received)

    r = httpx.put(
        f"{gateway}/api/profile?upload={upload_id}",
        headers={**auth_headers(), "content-type": "application/octet-stream"},
        content=body(),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert seen_before_end and 0 < seen_before_end[0] < 5 * MIB
    assert r.json()["bytes"] == 5 * MIB
    assert r.json()["sha256"] == digest.hexdigest()
    assert r.json()["chunks"] > 1


def test_bodies_over_the_route_limit_are_refused_at_the_gateway(
    gateway: str, echoes: dict[str, EchoServer]
) -> None:
    """api-contracts §2.1: the body limit holds at the gateway, from Content-Length before
    anything is forwarded, and while reading a body sent without one."""
    declared = uuid.uuid4().hex
    r = httpx.post(
        f"{gateway}/api/payments/upload/{declared}",
        headers={**auth_headers(), "content-type": "application/octet-stream"},
        content=b"x" * (MIB + 1),
        timeout=30,
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert r.json()["error"]["message"] == "Request body exceeds 1 MiB"
    progress = f"{echoes['payments'].url}/_progress/{declared}"
    assert httpx.get(progress, timeout=5).json()["received"] == 0  # never reached payments

    def chunked() -> Iterator[bytes]:
        for _ in range(8):  # 2 MiB, no Content-Length
            yield b"y" * (256 * 1024)

    r = httpx.post(
        f"{gateway}/api/payments/upload/{uuid.uuid4().hex}",
        headers=auth_headers(),
        content=chunked(),
        timeout=30,
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    over = httpx.put(
        f"{gateway}/api/profile?upload={uuid.uuid4().hex}",
        headers=auth_headers(),
        content=b"z" * (8 * MIB + 1),
        timeout=30,
    )
    assert over.status_code == 413
    assert over.json()["error"]["message"] == "Request body exceeds 8 MiB"


def test_five_mib_download_is_streamed_back(gateway: str, echoes: dict[str, EchoServer]) -> None:
    download_id = uuid.uuid4().hex
    received = 0
    with (
        httpx.Client(timeout=15) as client,
        client.stream(
            "GET",
            f"{gateway}/api/payments/download/{download_id}?size={5 * MIB}",
            headers=auth_headers(),
        ) as response,
    ):
        assert response.status_code == 200
        released = False
        for piece in response.iter_bytes():
            received += len(piece)
            if received >= 512 * 1024 and not released:
                # The upstream holds the rest until released: the first part reached us
                # through the gateway while the upstream was still mid-response.
                httpx.post(f"{echoes['payments'].url}/_release/{download_id}", timeout=5)
                released = True
    assert released
    assert received == 5 * MIB


def test_compressed_bodies_and_cookies_pass_through(gateway: str) -> None:
    r = httpx.get(
        f"{gateway}/api/payments/gzip",
        headers={**auth_headers(), "accept-encoding": "gzip"},
        timeout=10,
    )
    assert r.headers["content-encoding"] == "gzip"
    assert r.json() == {"compressed": True}
    first = httpx.get(f"{gateway}/api/auth/cookie", timeout=10)
    assert first.headers["set-cookie"].startswith("sid=secret")
    # The gateway's client never replays one caller's cookies to another.
    later = httpx.get(f"{gateway}/api/auth/echo", timeout=10)
    assert "cookie" not in dict(later.json()["headers"])


def test_edge_auth(gateway: str) -> None:
    with httpx.Client(base_url=gateway, timeout=10) as client:
        for path in ("/api/payments/echo", "/api/profile/echo", "/api/admin/echo", "/api/auth/me"):
            r = client.get(path)
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "UNAUTHORIZED"
        r = client.get("/api/payments/echo", headers={"authorization": "Bearer not.a.jwt"})
        assert r.json()["error"]["code"] == "TOKEN_INVALID"
        r = client.get("/api/admin/echo", headers=auth_headers("VENDOR"))
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
        assert client.get("/api/admin/echo", headers=auth_headers("ADMIN")).status_code == 200
        # public routes pass without a token
        assert client.post("/api/payments/webhooks/psp", content=b"{}").status_code == 200
        assert client.post("/api/auth/login", json={}).status_code == 200


def test_cors_and_security_headers(gateway: str) -> None:
    allowed = "http://localhost:4200"
    with httpx.Client(base_url=gateway, timeout=10) as client:
        pre = client.options(
            "/api/payments/echo",
            headers={"origin": allowed, "access-control-request-method": "POST"},
        )
        assert pre.status_code == 204  # answered before auth and rate limiting
        assert pre.headers["access-control-allow-origin"] == allowed
        assert "ratelimit" not in pre.headers
        # a gateway-made 401 still carries CORS headers for an allowed origin
        denied = client.get("/api/payments/echo", headers={"origin": allowed})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == allowed
        assert "X-Request-ID" in denied.headers["access-control-expose-headers"]
        other = client.get("/api/payments/echo", headers={"origin": "https://evil.example"})
        assert other.status_code == 401
        assert "access-control-allow-origin" not in other.headers
        bad_pre = client.options(
            "/api/payments/echo",
            headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
        )
        assert bad_pre.status_code == 204
        assert "access-control-allow-origin" not in bad_pre.headers
        for r in (denied, client.get("/api/auth/echo"), client.get("/health/live")):
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert "strict-transport-security" in r.headers
            assert r.headers["content-security-policy"].startswith("default-src 'none'")
        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]


def test_merged_openapi_and_health(gateway: str) -> None:
    doc = httpx.get(f"{gateway}/openapi.json", timeout=10).json()
    assert doc["openapi"] == "3.1.0"
    for service in SERVICES:
        assert f"/api/{service}/echo" in doc["paths"]
    schemas = doc["components"]["schemas"]
    # identical definitions are shared, clashing ones renamed per service with refs rewritten
    assert "Shared" in schemas
    assert schemas["Error"]["title"] == "auth error"
    assert schemas["payments_Error"]["title"] == "payments error"
    ref = doc["paths"]["/api/payments/echo"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]["$ref"]
    assert ref == "#/components/schemas/payments_Error"
    health = httpx.get(f"{gateway}/health", timeout=10).json()["data"]
    assert health["status"] == "healthy"
    for service in SERVICES:
        assert health["checks"][service]["status"] == "up"
        assert health["checks"][service]["instances"][0]["ready"] is True
    # not rate limited
    assert "ratelimit" not in httpx.get(f"{gateway}/health/ready", timeout=10).headers


def test_concurrent_requests_are_all_answered(gateway: str) -> None:
    token = auth_headers()
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=gateway, timeout=10) as client:
            for _ in range(20):
                status = client.get("/api/payments/echo", headers=token).status_code
                with lock:
                    results.append(status)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 200
