"""Profile reads cached in Redis (cache-aside), invalidated after every change.

A reader that loaded the row before a concurrent change committed must not put its stale copy
back after the writer invalidated. Each user has a generation counter: the reader notes the
generation with its cache lookup (one MGET), and stores its copy only if the generation is
unchanged (one Lua call); invalidation deletes the copy and bumps the generation.

Redis is an accelerator here, never a dependency: when it is down, reads go to PostgreSQL and
invalidation is skipped (copies expire after `TTL_SECONDS` anyway).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from paysys.core.logging import get_logger

log = get_logger("paysys.profile.cache")

TTL_SECONDS = 300
GENERATION_TTL_SECONDS = 7 * 24 * 3600
DATA_KEY = "profile:v1:data:{}"
GEN_KEY = "profile:v1:gen:{}"

# KEYS[1] data, KEYS[2] generation; ARGV[1] json, ARGV[2] generation seen ("" = none), ARGV[3] ttl
_SET_IF_GENERATION = """
local current = redis.call('GET', KEYS[2]) or ''
if current == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
  return 1
end
return 0
"""


class ProfileCache:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, user_id: uuid.UUID) -> tuple[dict[str, Any] | None, str | None]:
        """(cached profile or None, generation token for `put`; None token = Redis down)."""
        try:
            raw, generation = await self.redis.mget(
                DATA_KEY.format(user_id), GEN_KEY.format(user_id)
            )
        except RedisError:
            log.warning("profile cache unavailable (read)")
            return None, None
        generation = _text(generation)
        if raw is not None:
            return json.loads(raw), generation
        return None, generation

    async def put(self, user_id: uuid.UUID, profile: dict[str, Any], generation: str) -> bool:
        try:
            stored = await self.redis.eval(
                _SET_IF_GENERATION,
                2,
                DATA_KEY.format(user_id),
                GEN_KEY.format(user_id),
                json.dumps(profile, separators=(",", ":")),
                generation,
                str(TTL_SECONDS),
            )
        except RedisError:
            log.warning("profile cache unavailable (write)")
            return False
        return bool(stored)

    async def invalidate(self, user_id: uuid.UUID) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(DATA_KEY.format(user_id))
                pipe.incr(GEN_KEY.format(user_id))
                pipe.expire(GEN_KEY.format(user_id), GENERATION_TTL_SECONDS)
                await pipe.execute()
        except RedisError:
            log.warning("profile cache unavailable (invalidate)", user_id=str(user_id))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
