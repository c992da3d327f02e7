"""Requests in flight per client at the gateway (api-contracts §2.1: at most 64 → 429).

A request counts from the moment the proxy takes it (before its body is read) until its
response has been relayed, so a client stalling inside many bodies at once is refused beyond
the cap as soon as it tries the next one. Clients are keyed by `core.clientip.client_key`
(IPv4 address, IPv6 /64), the same identity as the rate-limit buckets. Per process: the cap
protects this process's memory and event loop, not a shared budget, so it needs no Redis.
"""

from __future__ import annotations

from prometheus_client import Counter

REFUSED = Counter(
    "paysys_gateway_in_flight_refused_total",
    "Requests refused with 429 because their client had too many in flight",
)


class InFlight:
    """Counts per client key; a key leaves the table when its last request ends."""

    __slots__ = ("counts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: dict[str, int] = {}

    def enter(self, key: str) -> bool:
        """Count one more request of `key`; False (nothing counted) when it is at the cap."""
        counts = self.counts
        current = counts.get(key, 0)
        if current >= self.limit:
            REFUSED.inc()
            return False
        counts[key] = current + 1
        return True

    def leave(self, key: str) -> None:
        counts = self.counts
        current = counts[key] - 1
        if current:
            counts[key] = current
        else:
            del counts[key]
