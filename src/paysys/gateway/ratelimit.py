"""Exact distributed rate limits: one atomic Lua script per request (sliding window log).

The script runs inside Redis, so concurrent requests from any number of gateway processes are
serialised there: a window never admits more than its limit. Time comes from Redis (`TIME`),
so the clocks of the gateway hosts do not matter. For an authenticated request the same script
first checks the token's revocation marks (the keys of `paysys.core.revocation`), so the edge
check costs one Redis round trip in all.

When Redis cannot answer, the gateway fails open to a per-process limiter (logged and counted)
and leaves revocation to the services, which check again.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from itertools import count
from typing import Any

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from paysys.core.logging import get_logger
from paysys.core.redis import HotPathRedis, RedisPipe, create_pipe, hot_path_client
from paysys.core.redis_outage import RedisOutage
from paysys.core.revocation import REVOKED_JTI_KEY, REVOKED_SID_KEY, TOKEN_VERSION_KEY
from paysys.core.tokens import Principal

log = get_logger("paysys.gateway.ratelimit")

RATE_LIMITED = Counter("paysys_gateway_rate_limited_total", "Requests refused with 429", ["policy"])
FAIL_OPEN = Counter(
    "paysys_gateway_ratelimit_fail_open_total",
    "Requests limited by the per-process fallback because Redis could not answer",
)

# KEYS[1] window key; optional KEYS[2] revoked-jti key, KEYS[3] the user's token-version key,
# KEYS[4] revoked-session key (a token of an ended session).
# ARGV: limit, window (ms), unique member, the token's `ver` (with the revocation keys).
# → {1 admitted | 0 limited | -1 revoked, remaining, ms until the oldest entry leaves}
SLIDING_WINDOW_LUA = """
if #KEYS >= 3 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {-1, 0, 0} end
  if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 1 then return {-1, 0, 0} end
  local current = redis.call('GET', KEYS[3])
  if current and tonumber(ARGV[4]) < tonumber(current) then return {-1, 0, 0} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local admitted = 0
if used < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  used = used + 1
  admitted = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = window
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
if admitted == 1 then return {1, limit - used, reset} end
return {0, 0, reset}
"""


@dataclass(frozen=True, slots=True)
class Policy:
    """A limit and its header values (precomputed: the hot path only formats the numbers)."""

    name: str
    limit: int
    window: int  # seconds

    @property
    def window_ms(self) -> int:
        return self.window * 1000

    @property
    def policy_header(self) -> bytes:
        return f'"{self.name}";q={self.limit};w={self.window}'.encode()


@dataclass(slots=True)
class Decision:
    allowed: bool
    remaining: int
    reset_ms: int
    policy: Policy
    revoked: bool = False

    @property
    def reset_seconds(self) -> int:
        return max(1, math.ceil(self.reset_ms / 1000)) if self.reset_ms > 0 else 0

    def headers(self) -> list[tuple[bytes, bytes]]:
        policy = self.policy
        reset = str(self.reset_seconds).encode()
        remaining = str(self.remaining).encode()
        headers = [
            (b"ratelimit-policy", policy.policy_header),
            (b"ratelimit", b'"' + policy.name.encode() + b'";r=' + remaining + b";t=" + reset),
            (b"x-ratelimit-limit", str(policy.limit).encode()),
            (b"x-ratelimit-remaining", remaining),
            (b"x-ratelimit-reset", reset),
        ]
        if not self.allowed:
            headers.append((b"retry-after", reset))
        return headers


class LocalLimiter:
    """Per-process sliding window log: the fallback while Redis is down (not shared between
    replicas, so the effective limit is per replica then)."""

    MAX_KEYS = 50_000

    def __init__(self, clock: object = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, policy: Policy) -> Decision:
        now: float = self._clock()  # type: ignore[operator]
        window = float(policy.window)
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.MAX_KEYS:
                self._hits.clear()
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - window:
            hits.popleft()
        allowed = len(hits) < policy.limit
        if allowed:
            hits.append(now)
        reset = (hits[0] + window - now) if hits else window
        remaining = policy.limit - len(hits)
        return Decision(allowed, remaining, int(reset * 1000), policy)


class RateLimiter:
    """Redis sliding-window limits with a local fail-open fallback."""

    def __init__(self, redis: Redis, prefix: str = "gw:rl:", url: str | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.sha = hashlib.sha1(SLIDING_WINDOW_LUA.encode(), usedforsecurity=False).hexdigest()
        self.pipe: RedisPipe | None = create_pipe(url) if url is not None else None
        self.client: HotPathRedis = hot_path_client(self.pipe, redis)
        self.local = LocalLimiter()
        self._member = count()
        self._proc = os.urandom(4).hex()
        self.outage = RedisOutage(
            "rate limiter failing open: Redis unavailable", "rate limiter back on Redis"
        )

    async def hit(self, key: str, policy: Policy, principal: Principal | None = None) -> Decision:
        if not self.outage.usable():
            FAIL_OPEN.inc()
            return self.local.hit(key, policy)
        member = f"{self._proc}:{next(self._member)}"
        if principal is None:
            keys: list[str] = [self.prefix + key]
            args: list[str | int] = [policy.limit, policy.window_ms, member]
        else:
            keys = [
                self.prefix + key,
                REVOKED_JTI_KEY.format(principal.jti),
                TOKEN_VERSION_KEY.format(principal.id),
            ]
            if principal.sid:
                keys.append(REVOKED_SID_KEY.format(principal.sid))
            args = [policy.limit, policy.window_ms, member, principal.token_version]
        try:
            result = await self._eval(keys, args)
        except (TimeoutError, RedisError, OSError) as exc:
            self.outage.failed(exc)
            FAIL_OPEN.inc()
            return self.local.hit(key, policy)
        self.outage.succeeded()
        status, remaining, reset = result[0], result[1], result[2]
        if status < 0:
            return Decision(True, policy.limit, 0, policy, revoked=True)
        return Decision(status == 1, remaining, reset, policy)

    async def _eval(self, keys: list[str], args: list[str | int]) -> Any:
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its scripts: load it once more
            await self.client.script_load(SLIDING_WINDOW_LUA)
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()
