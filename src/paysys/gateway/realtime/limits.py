"""The limits of api-contracts §9.5 that need state: inbound message rate per connection, and
open connections per user across every replica.

Per-user connections are counted in Redis: one sorted set per user (`rt:conns:<user id>`),
one member per open connection, scored with a lease expiry that every replica renews for its own
connections (`renew`, with the periodic revocation sweep). A replica that dies without
releasing its members loses them when their lease runs out, so a crash never locks a user out
for long. Times are Redis's own (`TIME`), so replica clocks do not matter. While Redis cannot
answer, the cap holds per process (the caller passes its local count).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from paysys.core.logging import get_logger
from paysys.core.redis_outage import RedisOutage
from paysys.gateway.ratelimit import Policy

log = get_logger("paysys.gateway.realtime")

MAX_INBOUND_BYTES = 4096
MAX_QUEUED_BYTES = 1024 * 1024
MAX_SUBSCRIPTIONS = 50
HANDSHAKE_POLICY = Policy("realtime-handshake", 30, 60)

CONNECTIONS_KEY = "rt:conns:{}"
LEASE_MS = 180_000  # three revocation sweeps: renewed every 60 s

# KEYS[1] the user's set; ARGV: cap, lease (ms), member → 1 admitted | 0 at the cap
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
# KEYS[1] the user's set; ARGV: lease (ms), members... → renewed (re-added if purged meanwhile)
_RENEW_LUA = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1
"""


class MessageRate:
    """Inbound messages of one connection: a token bucket of 20 per 10 s (bursts of 20, then 2
    per second); every refused message is a breach, the 3rd breach within 60 s closes (1008)."""

    CAPACITY = 20.0
    PER_SECOND = 2.0
    BREACHES = 3
    BREACH_WINDOW = 60.0

    __slots__ = ("breaches", "stamp", "tokens")

    def __init__(self, now: float) -> None:
        self.tokens = self.CAPACITY
        self.stamp = now
        self.breaches: tuple[float, ...] = ()

    def hit(self, now: float) -> str:
        """`ok`, `limited` (answer RATE_LIMIT_EXCEEDED) or `close` (3 breaches: close 1008)."""
        self.tokens = min(self.CAPACITY, self.tokens + (now - self.stamp) * self.PER_SECOND)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return "ok"
        recent = tuple(t for t in self.breaches if now - t < self.BREACH_WINDOW)
        self.breaches = (*recent, now)
        return "close" if len(self.breaches) >= self.BREACHES else "limited"


class ConnectionCounter:
    """Open connections per user, shared by every replica through Redis."""

    def __init__(self, redis: Redis, cap: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.cap = cap
        self.clock = clock
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._renew = redis.register_script(_RENEW_LUA)
        self.outage = RedisOutage(
            "connection counter: Redis unavailable, counting per process",
            "connection counter back on Redis",
            clock=clock,
        )

    async def acquire(self, user_id: str, connection_id: str, local_count: int) -> bool:
        """Take a slot for a new connection; False when the user is at the cap."""
        if self.outage.usable():
            try:
                admitted = await self._acquire(
                    keys=[CONNECTIONS_KEY.format(user_id)],
                    args=[self.cap, LEASE_MS, connection_id],
                )
            except (RedisError, OSError) as exc:
                self.outage.failed(exc)
            else:
                self.outage.succeeded()
                return bool(admitted)
        return local_count < self.cap

    async def release(self, user_id: str, connection_id: str) -> None:
        with contextlib.suppress(RedisError, OSError):  # else its lease runs out instead
            await self.redis.zrem(CONNECTIONS_KEY.format(user_id), connection_id)

    async def renew(self, by_user: Iterable[tuple[str, list[str]]]) -> None:
        """Extend the leases of this process's connections (re-adding any Redis lost)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            queued = 0
            for user_id, connection_ids in by_user:
                await self._renew(
                    keys=[CONNECTIONS_KEY.format(user_id)],
                    args=[LEASE_MS, *connection_ids],
                    client=pipe,
                )
                queued += 1
            if queued:
                await pipe.execute()
