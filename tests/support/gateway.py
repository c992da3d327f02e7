"""Gateway test helpers: a small real upstream process ("echo") and token minting.

The echo upstream answers any `/api/<service>/...` path so the proxy mechanics (streaming,
headers, failures) can be driven end to end before and independently of the real services'
routes. Run it alone: `python -m tests.support.gateway --port 5000 --name payments`.

Endpoints (under any `/api/<service>` prefix):
- `.../echo...` → JSON of what arrived: method, path, raw path, query, headers, body hash
- `.../upload/{id}` (or any path with `?upload={id}`, e.g. `PUT /api/profile`, the one route
  with an 8 MiB body limit) → reads the body as a stream, recording progress at `/_progress/{id}`
- `.../download/{id}?size=N` → streams N bytes; after the first MiB waits for `POST /_release/{id}`
- `.../hang`               → never answers
- `.../hop`                → a response with hop-by-hop headers (and one named in Connection)
- `.../gzip`               → a gzip-encoded body with `Content-Encoding: gzip`
- `.../cookie`             → sets a cookie; `.../status/{code}` → that status
- `/health/ready`, `/health/live`, `/health` → 200; `/openapi.json` → a small document
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.support.servers import free_port, wait_for_port

MIB = 1024 * 1024

# --- the upstream app (plain ASGI, no dependencies beyond the standard library) ---------------

_progress: dict[str, int] = {}
_release: dict[str, asyncio.Event] = {}


def _json(status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None) -> tuple:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return status, headers + (extra or []), body


def _openapi(name: str) -> dict[str, Any]:
    # Every instance defines `Error` differently (a clash to rename) and `Shared` identically.
    # The echo path declares every method the echo answers: the gateway answers 405 itself
    # for a method the merged document does not list (api-contracts §1.4).
    operation = {
        "tags": [name],
        "responses": {
            "200": {
                "description": "ok",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": f"echo {name}", "version": os.environ.get("ECHO_VERSION", "1")},
        "paths": {
            f"/api/{name}/echo": dict.fromkeys(("get", "post", "put", "patch", "delete"), operation)
        },
        "components": {
            "schemas": {
                "Error": {"type": "object", "title": f"{name} error"},
                "Shared": {"type": "string"},
            }
        },
    }


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    name = os.environ.get("ECHO_NAME", "echo")
    path: str = scope["path"]
    parts = path.strip("/").split("/")
    method = scope["method"]

    async def respond(status: int, headers: list, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    if path.startswith("/health"):
        await respond(*_json(200, {"success": True, "data": {"status": "ready"}}))
        return
    if path == "/openapi.json":
        await respond(*_json(200, _openapi(name)))
        return
    if path.startswith("/_progress/"):
        await respond(*_json(200, {"received": _progress.get(parts[1], 0)}))
        return
    if path.startswith("/_release/"):
        _release.setdefault(parts[1], asyncio.Event()).set()
        await respond(*_json(200, {"released": True}))
        return
    action = parts[2] if len(parts) > 2 and parts[0] == "api" else ""
    query = dict(
        item.split("=", 1) for item in scope["query_string"].decode().split("&") if "=" in item
    )

    if action == "upload" or "upload" in query:
        upload_id = parts[3] if action == "upload" else query["upload"]
        digest = hashlib.sha256()
        total = chunks = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            if chunk:
                chunks += 1
                total += len(chunk)
                digest.update(chunk)
                _progress[upload_id] = total
            if not message.get("more_body", False):
                break
        await respond(*_json(200, {"bytes": total, "chunks": chunks, "sha256": digest.hexdigest()}))
        return
    if action == "download":
        download_id = parts[3]
        size = int(query.get("size", str(5 * MIB)))
        event = _release.setdefault(download_id, asyncio.Event())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        sent = 0
        block = bytes(range(256)) * 256  # 64 KiB
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            sent += len(piece)
            if sent >= MIB and not event.is_set():
                await asyncio.wait_for(event.wait(), 30)
        await send({"type": "http.response.body", "body": b""})
        return
    if action == "hang":
        await asyncio.sleep(3600)
        return
    if action == "hop":
        await respond(
            200,
            [
                (b"content-type", b"text/plain"),
                (b"connection", b"X-Hop-Secret"),
                (b"x-hop-secret", b"should-not-pass"),
                (b"keep-alive", b"timeout=5"),
                (b"x-end-to-end", b"kept"),
                (b"content-length", b"2"),
            ],
            b"ok",
        )
        return
    if action == "gzip":
        body = gzip.compress(b'{"compressed": true}')
        await respond(
            200,
            [
                (b"content-type", b"application/json"),
                (b"content-encoding", b"gzip"),
                (b"content-length", str(len(body)).encode()),
            ],
            body,
        )
        return
    if action == "cookie":
        await respond(*_json(200, {"ok": True}, [(b"set-cookie", b"sid=secret; Path=/")]))
        return
    if action == "status":
        code = int(parts[3])
        if code in (204, 304):
            await respond(code, [], b"")
        else:
            await respond(*_json(code, {"status": code}))
        return

    # default: echo
    digest = hashlib.sha256()
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        total += len(chunk)
        digest.update(chunk)
        if not message.get("more_body", False):
            break
    payload = {
        "server": name,
        "method": method,
        "path": path,
        "rawPath": (scope.get("raw_path") or b"").decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "bodyBytes": total,
        "bodySha256": digest.hexdigest(),
    }
    await respond(*_json(200, payload))


# --- process helpers ------------------------------------------------------------------------


@dataclass
class EchoServer:
    """The echo upstream as a real process on a fixed port (restartable on the same port)."""

    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, name: str, logdir: Path) -> EchoServer:
        logdir.mkdir(parents=True, exist_ok=True)
        return cls(name, free_port(), logdir / f"echo-{name}-{uuid.uuid4().hex[:6]}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EchoServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.gateway", "--port", str(self.port)],
            env={**os.environ, "ECHO_NAME": self.name},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,
        )
        wait_for_port(self.port, 15)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def upstream_env(servers: dict[str, EchoServer | list[EchoServer]]) -> dict[str, str]:
    """`*_SERVICE_URL` variables pointing the gateway at echo servers."""
    env = {}
    for service, value in servers.items():
        group = value if isinstance(value, list) else [value]
        env[f"{service.upper()}_SERVICE_URL"] = ",".join(s.url for s in group)
    return env


def mint_token(role: str = "CUSTOMER", user_id: uuid.UUID | None = None) -> str:
    """An access token signed with the run's secret (as auth would issue it)."""
    from paysys.core.config import Settings
    from paysys.core.tokens import TokenCodec

    token, _ = TokenCodec(Settings()).issue_access(
        user_id=user_id or uuid.uuid4(),
        email=f"{role.lower()}@example.com",
        name=f"{role.title()} User",
        role=role,
        sid=str(uuid.uuid4()),
    )
    return token


def forget_auth_buckets() -> None:
    """Empty the gateway's login/register/refresh buckets: e2e tests of a run register and log
    in through gateways from the same IP."""
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for pattern in ("gw:rl:register:*", "gw:rl:login:*", "gw:rl:refresh:*"):
        keys = list(client.scan_iter(pattern))
        if keys:
            client.delete(*keys)
    client.close()


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; return its value or raise after the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            last = predicate()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        "tests.support.gateway:echo_app",
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        access_log=False,
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()


def forget_rate_limits() -> None:
    """Empty the gateway's rate-limit buckets in the run's Redis (every stack of a run shares
    them: one test's burst of sign-ups must not refuse the next test's)."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        keys = list(client.scan_iter("gw:rl:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
