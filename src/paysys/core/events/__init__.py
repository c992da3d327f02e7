"""The event hub (events.md): outbox → Redis Stream + Pub/Sub → idempotent consumers."""
