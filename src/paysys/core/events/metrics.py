"""Prometheus metrics of the event hub (exposed on every service's `/metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_BACKLOG = Gauge(
    "paysys_events_outbox_backlog", "Outbox rows not yet published to Redis (seen by this relay)"
)
OUTBOX_OLDEST_SECONDS = Gauge(
    "paysys_events_outbox_oldest_pending_seconds", "Age of the oldest unpublished outbox row"
)
PUBLISHED = Counter("paysys_events_published_total", "Events published by this relay", ["type"])
PUBLISH_FAILURES = Counter(
    "paysys_events_publish_failures_total", "Relay batches that Redis did not acknowledge"
)
PRUNED = Counter("paysys_events_outbox_pruned_total", "Published outbox rows pruned")
HANDLED = Counter(
    "paysys_events_handled_total",
    "Events taken by a consumer, by outcome (handled, duplicate, ignored, failed)",
    ["consumer", "type", "outcome"],
)
DEAD_LETTERS = Counter(
    "paysys_events_dead_letters_total", "Events moved to events.dead", ["consumer", "type"]
)
DEAD_LETTER_STREAM = Gauge("paysys_events_dead_letter_stream_length", "Length of events.dead")
CONSUMER_LAG = Gauge(
    "paysys_events_consumer_lag", "Stream entries not yet delivered to the group", ["consumer"]
)
CONSUMER_PENDING = Gauge(
    "paysys_events_consumer_pending",
    "Entries delivered to the group but not acknowledged",
    ["consumer"],
)
DELIVERY_SECONDS = Histogram(
    "paysys_events_delivery_seconds",
    "From emit (occurredAt) to the consumer's commit",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
