"""The shared async Redis client."""

from __future__ import annotations

from redis.asyncio import Redis


def create_redis(url: str) -> Redis:
    # Short timeouts: a dead Redis must fail a request fast (and fail open where designed),
    # never hang it.
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        health_check_interval=15,
        max_connections=200,
    )
