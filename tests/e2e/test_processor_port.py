"""Issue 17, item 4: the built-in processor reports to the port its own process serves.

Payments runs as a real `paysys serve payments --port N` process (N never 3002; no PORT in its
environment and PAYMENTS_SERVICE_URL at its default 3002: only `--port` says where it listens).
It has a private database, a private Redis and its own webhook secret, so no other processor
of the run can move its payments and no other payments service can accept their webhooks: a
payment reaching its final status proves the webhook reached this very process. Meanwhile a
dummy server on 127.0.0.1:3002 (the old guess) must receive nothing.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from paysys.core.config import Settings
from tests.conftest import base_env
from tests.support.cli import scratch_database
from tests.support.servers import RedisServer, Stack, free_port

pytestmark = pytest.mark.e2e

OLD_GUESS = 3002


@contextmanager
def listener_on(port: int) -> Iterator[list[str] | None]:
    """A dummy HTTP server on 127.0.0.1:`port` that records every request line (and answers
    200, as a foreign service accepting the webhook would); None when the port is taken."""
    seen: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def _record(self) -> None:
            seen.append(f"{self.command} {self.path}")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PUT = _record

        def log_message(self, format: str, *args: object) -> None:
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Recorder)
    except OSError:
        yield None
        return
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def private_infra(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A migrated scratch database and a private redis-server, as environment variables."""
    from paysys.db import migrate

    redis = RedisServer(free_port(), tmp_path / "redis")
    with scratch_database(f"port_{uuid.uuid4().hex[:6]}") as database_url:
        # migrate.upgrade runs its own event loop: keep it off pytest's.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(migrate.upgrade, Settings(database_url=database_url)).result()
        redis.start()
        try:
            yield {"DATABASE_URL": database_url, "REDIS_URL": redis.url}
        finally:
            redis.stop()


def register(client: httpx.Client, auth_url: str) -> dict[str, str]:
    email = f"port-{uuid.uuid4().hex[:10]}@example.com"
    r = client.post(
        f"{auth_url}/api/auth/register",
        json={"email": email, "password": "Str0ng!Passw0rd", "name": "Port Test"},
    )
    assert r.status_code == 201, r.text
    return {"email": email, "token": r.json()["data"]["accessToken"]}


def wait_final(client: httpx.Client, url: str, headers: dict[str, str], ids: list[str]) -> dict:
    deadline = time.monotonic() + 60
    statuses: dict[str, str] = {}
    for _ in range(1200):  # bounded in count and time
        for pid in ids:
            r = client.get(f"{url}/api/payments/{pid}", headers=headers)
            assert r.status_code == 200, r.text
            statuses[pid] = r.json()["data"]["status"]
        if set(statuses.values()) <= {"completed", "failed"} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return statuses


def test_the_processor_reports_to_the_port_this_process_serves(tmp_path: Path) -> None:
    with (
        private_infra(tmp_path) as infra,
        listener_on(OLD_GUESS) as old_port_requests,
    ):
        extra = {
            **infra,
            "PSP_WEBHOOK_SECRET": secrets.token_hex(32),
            "PROCESSOR_DELAY_MS": "50",
        }
        env = {k: v for k, v in base_env().items() if k not in {"PAYMENTS_WEBHOOK_URL", "HOST"}}
        stack = Stack.build(env, tmp_path / "logs", ("auth", "payments"), extra)
        payments = stack.services["payments"]
        # As in `paysys serve payments --port N` with the URLs left at their defaults: neither
        # PORT nor PAYMENTS_SERVICE_URL tells the process where it listens, only --port.
        payments.env = {**payments.env, "PAYMENTS_SERVICE_URL": f"http://127.0.0.1:{OLD_GUESS}"}
        assert payments.port != OLD_GUESS and "PORT" not in payments.env
        stack.start()
        try:
            with httpx.Client(timeout=30) as client:
                alice = register(client, stack.url("auth"))
                bob = register(client, stack.url("auth"))
                headers = {"Authorization": f"Bearer {alice['token']}"}
                ids = []
                for description in ("port test", "port test FAIL"):
                    r = client.post(
                        f"{payments.url}/api/payments",
                        json={
                            "amount": "12.50",
                            "currency": "USD",
                            "type": "instant",
                            "recipientEmail": bob["email"],
                            "description": description,
                        },
                        headers=headers,
                    )
                    assert r.status_code == 201, r.text
                    ids.append(r.json()["data"]["id"])
                statuses = wait_final(client, payments.url, headers, ids)
        finally:
            stack.stop()
        if old_port_requests is None:
            warnings.warn(
                f"127.0.0.1:{OLD_GUESS} is taken by another program: not checked that nothing "
                "was sent there (the final statuses below still prove the webhook reached "
                "this process, signed with a secret no other service knows)",
                stacklevel=1,
            )
        else:
            assert old_port_requests == [], "webhooks went to the old guess, 3002"
        log = payments.log_path.read_text()[-3000:]
        assert statuses == {ids[0]: "completed", ids[1]: "failed"}, log
