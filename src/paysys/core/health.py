"""Health endpoints of api-contracts §7: live (no I/O), ready (dependency checks), summary.

Readiness answers "can this process serve requests now" (a Kubernetes readiness probe): a
`required` check down → 503 `not_ready`; an `optional` one down → 200 `degraded` (the process
still serves). Results are shared for `cache_seconds`, and concurrent requests wait for the one
probe in flight, so any request rate costs at most one check per dependency per period. Public
responses carry each check's status and latency only: failures (error texts) go to the log.
"""

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
from paysys.core.logging import get_logger
from paysys.core.metrics import DEPENDENCY_UP
from paysys.core.timefmt import utcnow_iso

Check = Callable[[], Awaitable[Any]]
Results = tuple[dict[str, dict[str, Any]], bool, bool]

log = get_logger("paysys.health")


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
    cache_seconds: float = 1.0
    clock: Callable[[], float] = time.monotonic  # injected by tests (the cache's age)
    started_at: float = field(default_factory=time.monotonic)
    _cached: tuple[float, Results] | None = field(default=None, init=False, repr=False)
    _probing: asyncio.Future[Results] | None = field(default=None, init=False, repr=False)
    _down: set[str] = field(default_factory=set, init=False, repr=False)

    async def run(self) -> Results:
        """→ (public checks, all required up, all optional up): the cached result while it is
        younger than `cache_seconds`, else the one probe in flight (started if none is)."""
        cached = self._cached
        if cached is not None and self.clock() - cached[0] < self.cache_seconds:
            return cached[1]
        if self._probing is None:
            self._probing = asyncio.ensure_future(self._probe())
        # shield: one caller going away (client disconnect) must not cancel everyone's probe
        return await asyncio.shield(self._probing)

    async def _probe(self) -> Results:
        try:
            names = [*self.required, *self.optional]
            checks = [*self.required.values(), *self.optional.values()]
            results = await asyncio.gather(*(run_check(c, self.timeout) for c in checks))
            by_name = dict(zip(names, results, strict=True))
            for name, result in by_name.items():
                self._record(name, result)
            required_ok = all(by_name[n]["status"] == "up" for n in self.required)
            optional_ok = all(by_name[n]["status"] == "up" for n in self.optional)
            public = {name: _public(result) for name, result in by_name.items()}
            outcome = (public, required_ok, optional_ok)
            self._cached = (self.clock(), outcome)
            return outcome
        finally:
            self._probing = None

    def _record(self, name: str, result: dict[str, Any]) -> None:
        up = result["status"] == "up"
        DEPENDENCY_UP.labels(name).set(1 if up else 0)
        if not up and name not in self._down:
            self._down.add(name)
            log.warning("health check failing", check=name, error=result.get("error"))
        elif up and name in self._down:
            self._down.discard(name)
            log.info("health check passing again", check=name)

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
        checks, required_ok, optional_ok = await self.run()
        status = ("ready" if optional_ok else "degraded") if required_ok else "not_ready"
        data = {"status": status, "service": self.service, "checks": checks}
        if required_ok:
            return JSONResponse({"success": True, "data": data})
        failing = ", ".join(n for n in self.required if checks[n]["status"] != "up")
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


def _public(result: dict[str, Any]) -> dict[str, Any]:
    """A check's result as every caller may see it: no error text (it could name a host)."""
    return {key: value for key, value in result.items() if key != "error"}
