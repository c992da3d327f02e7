"""Upstream pools: several URLs per service, round-robin over the healthy ones.

Each URL has its own circuit breaker (passive health: consecutive transport failures) and a
`ready` flag kept by the gateway's periodic `/health/ready` probe (active health).

Breaker states: closed (normal) → after `threshold` consecutive failures, open for
`open_seconds` (requests to that URL fail at once) → half-open: one single probe request is let
through; its success closes the circuit, its failure opens it again for another period.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Gauge

from paysys.core.logging import get_logger

# `upstream` is the URL's position in `*_SERVICE_URL` (0, 1, ...), never the URL: /metrics is
# served on the public port and must not name internal addresses (api-contracts §2.1).
CIRCUIT_STATE = Gauge(
    "paysys_gateway_circuit_open",
    "1 while the circuit of an upstream URL is open or half-open",
    ["service", "upstream"],
)
UPSTREAM_READY = Gauge(
    "paysys_gateway_upstream_ready",
    "Last readiness probe of an upstream URL (1 ready)",
    ["service", "upstream"],
)

log = get_logger("paysys.gateway")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Upstream:
    """One URL of a service, with its breaker and readiness."""

    __slots__ = (
        "_gauge",
        "base",
        "clock",
        "failures",
        "index",
        "open_seconds",
        "opened_at",
        "probing",
        "ready",
        "service",
        "state",
        "threshold",
    )

    def __init__(
        self,
        service: str,
        base: str,
        *,
        threshold: int = 5,
        open_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        index: int = 0,
    ) -> None:
        self.service = service
        self.base = base.rstrip("/")
        self.index = index  # position in the service's URL list: the public name of this URL
        self.threshold = threshold
        self.open_seconds = open_seconds
        self.clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False
        self.ready = True  # optimistic until the first probe says otherwise
        self._gauge = CIRCUIT_STATE.labels(service, str(index))

    def available(self) -> bool:
        """May a request go to this URL now? (Does not reserve anything.)"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return self.clock() - self.opened_at >= self.open_seconds
        return not self.probing  # half-open: only while no probe is in flight

    def acquire(self) -> bool:
        """Reserve a request slot: always in closed; the single probe in half-open."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.open_seconds:
                return False
            self.state = HALF_OPEN
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        if self.state != CLOSED:
            log.info("circuit closed", service=self.service, upstream=self.base)
            self._gauge.set(0)
            self.state = CLOSED
            self.probing = False
        self.failures = 0

    def failure(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
            if self.state == CLOSED:
                log.warning(
                    "circuit opened",
                    service=self.service,
                    upstream=self.base,
                    failures=self.failures,
                )
            self.state = OPEN
            self.opened_at = self.clock()
            self.probing = False
            self._gauge.set(1)

    def release(self) -> None:
        """A reserved request ended without telling anything about the upstream's health
        (e.g. the client went away): let another probe through."""
        self.probing = False

    def snapshot(self) -> dict[str, object]:
        """Public state (health responses): no URL, host or port."""
        return {"circuit": self.state, "ready": self.ready}


class ServicePool:
    """The URLs of one service; `choose` spreads requests round-robin over healthy ones."""

    __slots__ = ("_next", "name", "upstreams")

    def __init__(self, name: str, upstreams: list[Upstream]) -> None:
        if not upstreams:
            raise ValueError(f"no URL configured for service {name}")
        self.name = name
        self.upstreams = upstreams
        self._next = 0

    def choose(self, exclude: tuple[Upstream, ...] = ()) -> Upstream | None:
        """The next URL that is ready and whose circuit lets the request through; when none is
        ready (the probe may lag behind), the next one whose circuit allows it; else None."""
        ups = self.upstreams
        count = len(ups)
        if count == 1 and not exclude:
            only = ups[0]
            return only if only.acquire() else None
        start = self._next
        self._next = (start + 1) % count
        fallback: Upstream | None = None
        for offset in range(count):
            candidate = ups[(start + offset) % count]
            if candidate in exclude or not candidate.available():
                continue
            if candidate.ready:
                if candidate.acquire():
                    return candidate
            elif fallback is None:
                fallback = candidate
        if fallback is not None and fallback.acquire():
            return fallback
        return None


def build_pools(
    urls: dict[str, list[str]],
    *,
    threshold: int,
    open_seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, ServicePool]:
    return {
        name: ServicePool(
            name,
            [
                Upstream(
                    name,
                    url,
                    threshold=threshold,
                    open_seconds=open_seconds,
                    clock=clock,
                    index=index,
                )
                for index, url in enumerate(dict.fromkeys(service_urls))
            ],
        )
        for name, service_urls in urls.items()
    }


def set_ready(upstream: Upstream, ready: bool) -> bool:
    """Record a probe result; → True when the URL just came back (down → up)."""
    came_back = ready and not upstream.ready
    upstream.ready = ready
    UPSTREAM_READY.labels(upstream.service, str(upstream.index)).set(1 if ready else 0)
    if ready and upstream.state == OPEN:
        # The service answers its readiness probe again: let the next request be the probe
        # instead of waiting for the rest of the open period.
        upstream.opened_at = upstream.clock() - upstream.open_seconds
    return came_back
