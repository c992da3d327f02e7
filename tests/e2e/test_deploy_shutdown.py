"""Graceful shutdown of a real service process (what Kubernetes / Compose do on a rollout):
SIGTERM → stop accepting → finish in-flight requests (bounded) → stop workers → exit 0."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.support.deploy import in_flight, poll, refuses_connections

pytestmark = pytest.mark.e2e

# uvicorn's timeout_graceful_shutdown (paysys.cli.serve) + Runtime.close's worker grace.
DRAIN_BOUND = 10.0
WORKER_GRACE = 10.0
# A POST whose body FastAPI reads before anything else (then 401: no token). Any route with a
# JSON body works; this one exists from the admin service's first version on.
SLOW_PATH = "/api/admin/users"
BODY = json.dumps(
    {"email": "drain@example.com", "password": "Passw0rd!x", "name": "Drain"}
).encode()


def test_sigterm_finishes_the_in_flight_request_then_exits_zero(make_stack) -> None:
    stack = make_stack(("admin",))
    stack.start()
    service = stack.services["admin"]
    assert service.proc is not None
    with in_flight(service.port, SLOW_PATH, BODY) as request:
        started = time.monotonic()
        os.kill(service.proc.pid, signal.SIGTERM)
        # It stops accepting new connections at once, while the in-flight request keeps it alive.
        assert poll(lambda: refuses_connections(service.port), timeout=5)
        assert service.proc.poll() is None, "exited before finishing the in-flight request"
        status, headers, payload = request.finish()
    # The request completed normally (the app's own answer, not a dropped connection), and the
    # server told the client not to reuse the connection.
    assert status == 401, payload
    assert json.loads(payload)["error"]["code"] in {"UNAUTHORIZED", "TOKEN_MISSING"}
    assert headers.get("connection") == "close"
    code = service.proc.wait(DRAIN_BOUND + WORKER_GRACE)
    elapsed = time.monotonic() - started
    assert code == 0, service.log_path.read_text()[-2000:]
    assert elapsed < DRAIN_BOUND, f"took {elapsed:.1f}s with nothing left to drain"
    log = service.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
    service.proc = None


def test_a_stuck_request_cannot_hold_the_shutdown_beyond_the_bound(make_stack) -> None:
    stack = make_stack(("admin",))
    stack.start()
    service = stack.services["admin"]
    assert service.proc is not None
    with in_flight(service.port, SLOW_PATH, BODY):
        started = time.monotonic()
        os.kill(service.proc.pid, signal.SIGTERM)
        # The client never sends the body: uvicorn cancels the request after its bound.
        code = service.proc.wait(DRAIN_BOUND + WORKER_GRACE + 5)
        elapsed = time.monotonic() - started
    assert code == 0, service.log_path.read_text()[-2000:]
    assert DRAIN_BOUND - 1 <= elapsed < DRAIN_BOUND + WORKER_GRACE, elapsed
    service.proc = None
