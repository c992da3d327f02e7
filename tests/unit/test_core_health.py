"""Readiness semantics of api-contracts §7 (revision 2) with counting fake checks: required vs
optional, the shared 1 s result (N concurrent probes → one check per dependency), no error
texts in public responses."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from paysys.core import health as health_module
from paysys.core.health import HealthChecks


class FakeCheck:
    def __init__(self, fail: bool = False, delay: float = 0.05) -> None:
        self.calls = 0
        self.fail = fail
        self.delay = delay

    async def __call__(self) -> None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("connect to 10.1.2.3:6379 refused")


def client_for(health: HealthChecks) -> httpx.AsyncClient:
    app = Starlette(routes=health.routes())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_concurrent_probes_share_one_check_per_dependency() -> None:
    database, redis = FakeCheck(), FakeCheck()
    now = [100.0]  # the cache's clock, moved by hand: a loaded machine cannot age it
    health = HealthChecks(
        "svc",
        required={"database": database},
        optional={"redis": redis},
        cache_seconds=0.3,
        clock=lambda: now[0],
    )
    async with client_for(health) as client:
        answers = await asyncio.gather(
            *(client.get(path) for path in ["/health/ready", "/health"] * 25)
        )
        assert {r.status_code for r in answers} == {200}
        assert (database.calls, redis.calls) == (1, 1)
        await client.get("/health/ready")  # still within the period: cached
        assert (database.calls, redis.calls) == (1, 1)
        now[0] += 0.35
        await asyncio.gather(*(client.get("/health/ready") for _ in range(10)))
        assert (database.calls, redis.calls) == (2, 2)


async def test_a_caller_going_away_does_not_cancel_the_shared_probe() -> None:
    check = FakeCheck(delay=0.2)
    health = HealthChecks("svc", required={"database": check}, cache_seconds=5)
    first = asyncio.create_task(health.run())
    await asyncio.sleep(0.05)
    second = asyncio.create_task(health.run())
    await asyncio.sleep(0.01)
    first.cancel()
    checks, required_ok, _ = await second
    assert required_ok and checks["database"]["status"] == "up"
    assert check.calls == 1


async def test_optional_down_is_ready_but_degraded() -> None:
    health = HealthChecks(
        "svc",
        required={"database": FakeCheck()},
        optional={"redis": FakeCheck(fail=True)},
        cache_seconds=0,
    )
    async with client_for(health) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        body = ready.json()
        assert body["success"] is True and body["data"]["status"] == "degraded"
        assert body["data"]["checks"]["redis"]["status"] == "down"
        summary = await client.get("/health")
        assert summary.status_code == 200 and summary.json()["data"]["status"] == "degraded"
        for response in (ready, summary):
            assert (
                "10.1.2.3" not in response.text
                and "error" not in response.json()["data"]["checks"]["redis"]
            )


async def test_required_down_is_not_ready() -> None:
    health = HealthChecks(
        "svc",
        required={"database": FakeCheck(fail=True)},
        optional={"redis": FakeCheck()},
        cache_seconds=0,
    )
    async with client_for(health) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["data"]["status"] == "not_ready"
        assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert body["error"]["message"] == "Dependency not ready: database"
        summary = await client.get("/health")
        assert summary.status_code == 503 and summary.json()["data"]["status"] == "unhealthy"
        assert "refused" not in ready.text + summary.text


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))


@pytest.mark.parametrize("fail", [False, True])
async def test_failures_are_logged_once_per_outage(
    fail: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = RecordingLog()
    monkeypatch.setattr(health_module, "log", log)
    check = FakeCheck(fail=fail, delay=0)
    health = HealthChecks("svc", required={"database": check}, cache_seconds=0)
    for _ in range(3):
        await health.run()
    check.fail = False
    await health.run()
    await health.run()
    expected = [
        ("warning", "health check failing", {"check": "database", "error": "ConnectionError"}),
        ("info", "health check passing again", {"check": "database"}),
    ]
    # the operator sees the cause once per outage; callers never do
    assert log.lines == (expected if fail else [])
