"""Health endpoints of api-contracts §7: live (no I/O), ready (dependency checks), summary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from paysys import __version__
from paysys.core.context import request_id_var
from paysys.core.metrics import DEPENDENCY_UP
from paysys.core.timefmt import utcnow_iso

Check = Callable[[], Awaitable[Any]]


async def run_check(check: Check, limit: float) -> dict[str, Any]:
    """Run one check with a timeout; never raises. A check may return extra fields (a dict)."""
    started = time.perf_counter()
    try:
        extra = await asyncio.wait_for(check(), limit)
    except TimeoutError:
        return {"status": "down", "latencyMs": _ms(started), "error": f"timed out after {limit}s"}
    except Exception as exc:  # any failure is a failed check, not a crashed endpoint
        return {"status": "down", "latencyMs": _ms(started), "error": _describe(exc)}
    result: dict[str, Any] = {"status": "up", "latencyMs": _ms(started)}
    if isinstance(extra, dict):
        result.update(extra)
    return result


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _describe(exc: Exception) -> str:
    # The exception class says what failed without leaking connection strings or hosts.
    return type(exc).__name__


@dataclass
class HealthChecks:
    service: str
    timeout: float = 2.0
    required: dict[str, Check] = field(default_factory=dict)
    optional: dict[str, Check] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)

    async def run(self) -> tuple[dict[str, dict[str, Any]], bool, bool]:
        """→ (checks, all required up, all optional up)."""
        names = [*self.required, *self.optional]
        checks = [*self.required.values(), *self.optional.values()]
        results = await asyncio.gather(*(run_check(c, self.timeout) for c in checks))
        by_name = dict(zip(names, results, strict=True))
        for name, result in by_name.items():
            DEPENDENCY_UP.labels(name).set(1 if result["status"] == "up" else 0)
        required_ok = all(by_name[n]["status"] == "up" for n in self.required)
        optional_ok = all(by_name[n]["status"] == "up" for n in self.optional)
        return by_name, required_ok, optional_ok

    def routes(self) -> list[Route]:
        return [
            Route("/health/live", self.live, methods=["GET"]),
            Route("/health/ready", self.ready, methods=["GET"]),
            Route("/health", self.summary, methods=["GET"]),
        ]

    async def live(self, _: Request) -> JSONResponse:
        data = {"status": "alive", "service": self.service, "timestamp": utcnow_iso()}
        return JSONResponse({"success": True, "data": data})

    async def ready(self, _: Request) -> JSONResponse:
        checks, required_ok, _optional_ok = await self.run()
        data = {
            "status": "ready" if required_ok else "not_ready",
            "service": self.service,
            "checks": checks,
        }
        if required_ok:
            return JSONResponse({"success": True, "data": data})
        failing = ", ".join(n for n, c in checks.items() if c["status"] != "up")
        error = {
            "code": "SERVICE_UNAVAILABLE",
            "message": f"Dependency not ready: {failing}",
            "requestId": request_id_var.get(),
        }
        return JSONResponse({"success": False, "data": data, "error": error}, status_code=503)

    async def summary(self, _: Request) -> JSONResponse:
        checks, required_ok, optional_ok = await self.run()
        status = "unhealthy" if not required_ok else ("healthy" if optional_ok else "degraded")
        data = {
            "status": status,
            "service": self.service,
            "version": __version__,
            "uptime": round(time.monotonic() - self.started_at, 3),
            "timestamp": utcnow_iso(),
            "checks": checks,
        }
        if required_ok:
            return JSONResponse({"success": True, "data": data})
        error = {
            "code": "SERVICE_UNAVAILABLE",
            "message": "A required dependency is down",
            "requestId": request_id_var.get(),
        }
        return JSONResponse({"success": False, "data": data, "error": error}, status_code=503)
