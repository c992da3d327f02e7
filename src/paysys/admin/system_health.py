"""`GET /api/admin/health`: the whole system's health as the admin sees it (always 200).

- database, redis: this process's own connections (`SELECT 1`, `PING`);
- each service: `GET <url>/health/ready` over HTTP for every configured URL (replicas), with
  latency. All replicas ready → healthy; some → degraded; none → unhealthy; no URL → unknown.
- overall: unhealthy when the database or Redis is down, degraded when any service is not
  healthy, else healthy.
"""

from __future__ import annotations

import asyncio
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
                await response.read()
    except TimeoutError:
        return {"status": "unhealthy", "latencyMs": _ms(started), "error": "timed out"}
    except (aiohttp.ClientError, OSError) as exc:
        return {"status": "unhealthy", "latencyMs": _ms(started), "error": type(exc).__name__}
    if status == 200:
        return {"status": "healthy", "latencyMs": _ms(started)}
    return {"status": "unhealthy", "latencyMs": _ms(started), "error": f"HTTP {status}"}


async def _service(http: aiohttp.ClientSession, urls: list[str], limit: float) -> dict[str, Any]:
    if not urls:
        return {"status": "unknown", "latencyMs": None, "error": "no URL configured"}
    results = await asyncio.gather(*(_probe(http, url, limit) for url in urls))
    healthy = [r for r in results if r["status"] == "healthy"]
    latency = max(r["latencyMs"] for r in results)
    if len(healthy) == len(results):
        return {"status": "healthy", "latencyMs": latency}
    errors = "; ".join(f"{r['error']}" for r in results if r["status"] != "healthy")
    state = "degraded" if healthy else "unhealthy"
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
    if checks["database"]["status"] != "healthy" or checks["redis"]["status"] != "healthy":
        overall = "unhealthy"
    elif all(checks[key]["status"] == "healthy" for key in SERVICE_KEYS.values()):
        overall = "healthy"
    else:
        overall = "degraded"
    return {
        "status": overall,
        "timestamp": utcnow_iso(),
        "version": __version__,
        "uptime": round(time.monotonic() - started_at, 3),
        "services": {name: check["status"] for name, check in checks.items()},
        "checks": checks,
    }
