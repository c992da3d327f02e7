"""The metrics of api-contracts §9.9 (names as the contract spells them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("realtime_connections", "Open real-time connections", ["transport"])
MESSAGES_SENT = Counter(
    "realtime_messages_sent_total", "Messages handed to real-time connections", ["type"]
)
EVENTS_FORWARDED = Counter(
    "realtime_events_forwarded_total",
    "Events from the stream forwarded to at least one connection",
    ["event_type"],
)
HANDSHAKES_REJECTED = Counter(
    "realtime_handshakes_rejected_total", "Handshakes refused before the upgrade", ["reason"]
)
CLOSED = Counter("realtime_closed_total", "Real-time connections closed", ["code"])
STREAM_LAG = Histogram(
    "realtime_stream_lag_seconds",
    "From an event's occurredAt to its hand-over to the connections",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STREAM_ERRORS = Counter(
    "realtime_stream_read_errors_total", "Failed reads of the event stream (Redis unavailable)"
)


class SentCounter:
    """`MESSAGES_SENT` children resolved once per message type (hot path: one dict lookup)."""

    def __init__(self) -> None:
        self._children: dict[str, Counter] = {}

    def inc(self, type_: str) -> None:
        child = self._children.get(type_)
        if child is None:
            child = self._children[type_] = MESSAGES_SENT.labels(type_)
        child.inc()


SENT = SentCounter()
