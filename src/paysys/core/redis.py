"""The shared async Redis client."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError


def create_redis(url: str) -> Redis:
    # Short timeouts: a dead Redis must fail a request fast (and fail open where designed),
    # never hang it. After a Redis restart the pooled sockets are stale: retry quickly on a
    # fresh connection (redis-py's default backoff starts at 1 s, longer than our 2 s health
    # timeout, so the first check after a restart would report Redis down).
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        health_check_interval=15,
        max_connections=200,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        retry_on_error=[ConnectionError, TimeoutError],
    )
