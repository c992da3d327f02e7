"""Names and wire helpers shared by the relay, the consumers and `paysys events tail`."""

from __future__ import annotations

import random
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

STREAM = "events"
DEAD_STREAM = "events.dead"
CHANNEL_PREFIX = "events."
CHANNEL_PATTERN = "events.*"

# Redis being away (connection refused/reset, timeouts): wait and retry, never crash.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def channel(event_type: str) -> str:
    return f"{CHANNEL_PREFIX}{event_type}"


def stream_fields(event_id: str, event_type: str, payload_json: str) -> dict[str, str]:
    """One stream entry: the id and type for cheap filtering, the envelope as JSON."""
    return {"id": event_id, "type": event_type, "event": payload_json}


@dataclass
class Backoff:
    """Exponential back-off with jitter: base, 2*base, ... up to `cap` seconds."""

    base: float = 0.05
    cap: float = 5.0
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return delay * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.attempt = 0
