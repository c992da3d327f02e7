"""`GET /api/admin/health`: the whole system's health as the admin sees it (always 200).

- database, redis: this process's own connections (`SELECT 1`, `PING`);
- each service: `GET <url>/health/ready` over HTTP for every configured URL (replicas), with
  latency. A replica is healthy when ready, degraded when it answers 200 `degraded` (it serves
  without an optional dependency such as Redis), unhealthy otherwise. All replicas healthy →
  healthy; none serving → unhealthy; else degraded; no URL → unknown.
- overall, with the readiness semantics of api-contracts §7 (the database is required, Redis is
  not: without it the services still serve, limits fail open, revocation falls back to the
  database): unhealthy when the database is down; degraded when Redis is down or any service is
  not healthy; else healthy.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from sqlalchemy import text

from paysys import __version__
from paysys.core.config import Settings
from paysys.core.runtime import Runtime
from paysys.core.timefmt import utcnow_iso

SERVICE_KEYS = {
    "auth": "authService",
    "payments": "paymentsService",
    "admin": "adminService",
    "profile": "profileService",
}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def _timed(check: Any, limit: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), limit)
    except TimeoutError:
        return {"status": "unhealthy", "latencyMs": _ms(started), "error": "timed out"}
    except Exception as exc:  # a failed check is a state, never an error of this endpoint
        return {"status": "unhealthy", "latencyMs": _ms(started), "error": type(exc).__name__}
    return {"status": "healthy", "latencyMs": _ms(started)}


async def _probe(http: aiohttp.ClientSession, url: str, limit: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            async with http.get(url.rstrip("/") + "/health/ready") as response:
                status = response.status
                raw = await response.read()
    except TimeoutError:
        return {"status": "unhealthy", "latencyMs": _ms(started), "error": "timed out"}
    except (aiohttp.ClientError, OSError) as exc:
        return {"status": "unhealthy", "latencyMs": _ms(started), "error": type(exc).__name__}
    if status != 200:
        return {"status": "unhealthy", "latencyMs": _ms(started), "error": f"HTTP {status}"}
    down = _degraded_by(raw)
    if down is not None:
        return {"status": "degraded", "latencyMs": _ms(started), "error": down}
    return {"status": "healthy", "latencyMs": _ms(started)}


def _degraded_by(raw: bytes) -> str | None:
    """For a 200 readiness answer whose status is `degraded`: what is down (check names only,
    never error texts), else None."""
    try:
        data = json.loads(raw)["data"]
    except (ValueError, KeyError, TypeError):
        return None  # a 200 without our body: ready is all it says
    if not isinstance(data, dict) or data.get("status") != "degraded":
        return None
    checks = data.get("checks")
    down = sorted(
        name
        for name, check in (checks.items() if isinstance(checks, dict) else ())
        if isinstance(check, dict) and check.get("status") == "down"
    )
    return f"degraded ({', '.join(down)} down)" if down else "degraded"


async def _service(http: aiohttp.ClientSession, urls: list[str], limit: float) -> dict[str, Any]:
    if not urls:
        return {"status": "unknown", "latencyMs": None, "error": "no URL configured"}
    results = await asyncio.gather(*(_probe(http, url, limit) for url in urls))
    healthy = [r for r in results if r["status"] == "healthy"]
    serving = [r for r in results if r["status"] != "unhealthy"]
    latency = max(r["latencyMs"] for r in results)
    if len(healthy) == len(results):
        return {"status": "healthy", "latencyMs": latency}
    errors = "; ".join(f"{r['error']}" for r in results if r["status"] != "healthy")
    state = "degraded" if serving else "unhealthy"
    check: dict[str, Any] = {"status": state, "latencyMs": latency, "error": errors}
    if len(results) > 1:
        check["replicas"] = {"total": len(results), "healthy": len(healthy)}
    return check


async def system_health(runtime: Runtime, settings: Settings, started_at: float) -> dict[str, Any]:
    limit = settings.health_timeout

    async def database() -> None:
        async with runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await runtime.redis.ping()

    urls = settings.service_urls()
    timeout = aiohttp.ClientTimeout(total=limit + 0.5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        results = await asyncio.gather(
            _timed(database, limit),
            _timed(redis, limit),
            *(_service(http, urls[name], limit) for name in SERVICE_KEYS),
        )
    names = ["database", "redis", *SERVICE_KEYS.values()]
    checks = dict(zip(names, results, strict=True))
    if checks["database"]["status"] != "healthy":
        overall = "unhealthy"
    elif all(checks[key]["status"] == "healthy" for key in ("redis", *SERVICE_KEYS.values())):
        overall = "healthy"
    else:
        overall = "degraded"  # Redis down included: the system still serves (§7)
    return {
        "status": overall,
        "timestamp": utcnow_iso(),
        "version": __version__,
        "uptime": round(time.monotonic() - started_at, 3),
        "services": {name: check["status"] for name, check in checks.items()},
        "checks": checks,
    }
