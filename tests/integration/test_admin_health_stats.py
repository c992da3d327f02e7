"""System health (DB, Redis, every service's readiness over HTTP) and stats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from tests.support.admin import admin_and_token, insert_payment, insert_user
from tests.support.servers import free_port

SERVICES = ("authService", "paymentsService", "adminService", "profileService")


class FakeService:
    """A real HTTP server answering /health/ready with a chosen status after a delay."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _ready(self, _: web.Request) -> web.Response:
        await asyncio.sleep(self.delay)
        return web.json_response({"success": self.status == 200}, status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health/ready", self._ready)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeService]]:
    made = {
        "up": FakeService(),
        "up2": FakeService(),
        "not_ready": FakeService(status=503),
        "slow": FakeService(delay=2.0),
    }
    for fake in made.values():
        await fake.start()
    yield made
    for fake in made.values():
        await fake.stop()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


async def health_of(app_client, **urls: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    client = await app_client("admin", health_timeout=0.5, **urls)
    _, headers = await admin_and_token()
    r = await client.get("/api/admin/health", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def test_all_healthy(app_client, clean_state, fakes) -> None:  # type: ignore[no-untyped-def]
    url = fakes["up"].url
    data = await health_of(
        app_client,
        auth_service_url=url,
        payments_service_url=url,
        admin_service_url=url,
        profile_service_url=url,
    )
    assert data["status"] == "healthy"
    assert data["services"] == dict.fromkeys(("database", "redis", *SERVICES), "healthy")
    assert set(data["checks"]) == {"database", "redis", *SERVICES}
    for check in data["checks"].values():
        assert check["status"] == "healthy" and isinstance(check["latencyMs"], float)
        assert "error" not in check
    assert data["version"] and data["uptime"] >= 0 and data["timestamp"].endswith("Z")


async def test_degraded_states(app_client, clean_state, fakes) -> None:  # type: ignore[no-untyped-def]
    data = await health_of(
        app_client,
        auth_service_url=dead_url(),
        payments_service_url=fakes["not_ready"].url,
        admin_service_url=f"{fakes['up'].url},{dead_url()}",  # two replicas, one down
        profile_service_url=fakes["slow"].url,
    )
    assert data["status"] == "degraded"
    services = data["services"]
    assert services["database"] == services["redis"] == "healthy"
    assert services["authService"] == "unhealthy"
    assert services["paymentsService"] == "unhealthy"
    assert services["adminService"] == "degraded"
    assert services["profileService"] == "unhealthy"
    checks = data["checks"]
    assert checks["paymentsService"]["error"] == "HTTP 503"
    assert checks["profileService"]["error"] == "timed out"
    assert checks["profileService"]["latencyMs"] < 1500
    assert checks["adminService"]["replicas"] == {"total": 2, "healthy": 1}
    assert "127.0.0.1" not in str(checks)  # no hosts leaked


async def test_unknown_when_no_url(app_client, clean_state, fakes) -> None:  # type: ignore[no-untyped-def]
    url = fakes["up2"].url
    data = await health_of(
        app_client,
        auth_service_url="",
        payments_service_url=url,
        admin_service_url=url,
        profile_service_url=url,
    )
    assert data["services"]["authService"] == "unknown"
    assert data["status"] == "degraded"


async def test_redis_down_is_unhealthy_but_200(
    app_client, clean_state, fakes, redis_server
) -> None:  # type: ignore[no-untyped-def]
    url = fakes["up"].url
    client = await app_client(
        "admin",
        health_timeout=0.5,
        auth_service_url=url,
        payments_service_url=url,
        admin_service_url=url,
        profile_service_url=url,
    )
    _, headers = await admin_and_token()
    redis_server.stop()
    try:
        r = await client.get("/api/admin/health", headers=headers)
    finally:
        redis_server.start()
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["status"] == "unhealthy"
    assert data["services"]["redis"] == "unhealthy"
    assert data["services"]["database"] == "healthy"


# --- stats -----------------------------------------------------------------------------------


async def test_stats(app_client, clean_state) -> None:  # type: ignore[no-untyped-def]
    client = await app_client("admin")
    _, headers = await admin_and_token()
    customer = await insert_user(role="CUSTOMER")
    vendor = await insert_user(role="VENDOR")
    await insert_user(role="VENDOR", is_active=False)
    await insert_user(role="CUSTOMER", deleted=True, is_active=False)
    now = datetime.now(UTC)
    yesterday = now - timedelta(days=1)
    old = now - timedelta(days=40)
    c, v = customer["id"], vendor["id"]
    await insert_payment(c, v, amount=1050, status="completed", completed_at=now)
    await insert_payment(
        c, v, amount=250, status="completed", created_at=yesterday, completed_at=yesterday
    )
    await insert_payment(v, c, amount=1500, currency="JPY", status="completed", completed_at=now)
    await insert_payment(c, v, amount=999, status="failed")
    await insert_payment(c, v, amount=100, status="pending", created_at=old)

    r = await client.get("/api/admin/stats", headers=headers, params={"days": 7})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["users"] == {
        "total": 4,
        "byRole": {"CUSTOMER": 1, "VENDOR": 2, "ADMIN": 1},
        "active": 3,
    }
    assert data["payments"] == {
        "total": 5,
        "byStatus": {"pending": 1, "processing": 0, "completed": 3, "failed": 1, "cancelled": 0},
        "byCurrency": {
            "JPY": {"count": 1, "volume": "1500"},
            "USD": {"count": 4, "volume": "13.00"},
        },
    }
    daily = data["daily"]
    assert len(daily) == 7
    assert daily[-1]["date"] == now.date().isoformat()
    assert daily[0]["date"] == (now.date() - timedelta(days=6)).isoformat()
    assert daily[-1] == {
        "date": now.date().isoformat(),
        "payments": 3,
        "volume": {"JPY": "1500", "USD": "10.50"},
    }
    assert daily[-2] == {
        "date": yesterday.date().isoformat(),
        "payments": 1,
        "volume": {"USD": "2.50"},
    }
    assert sum(day["payments"] for day in daily) == 4  # the 40-day-old one is outside
    assert data["period"]["days"] == 7

    r = await client.get("/api/admin/stats", headers=headers)
    assert len(r.json()["data"]["daily"]) == 30
    r = await client.get("/api/admin/stats", headers=headers, params={"days": 365})
    assert len(r.json()["data"]["daily"]) == 365
    for bad in ("0", "366", "x", "-1", "٣", "²", "1" * 400):
        r = await client.get("/api/admin/stats", headers=headers, params={"days": bad})
        assert r.status_code == 400, bad
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await client.get("/api/admin/stats", headers=headers, params={"period": "7"})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["field"] == "period"
