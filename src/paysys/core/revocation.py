"""Revocation: marks in Redis checked on every authenticated request, the database as fallback.

One Redis round trip per request (MGET of the token's `jti` mark, its session's mark and the
user's "not before" instant, in milliseconds so a token issued in the same second after a
password change stays valid). When Redis is down a service decides from the database
(`db_revocation_fallback`, installed in every FastAPI service by `create_service_app`); the
gateway, which has no database, then leaves the check to the services, which always check again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from sqlalchemy import text
from starlette.requests import Request

from paysys.core.errors import AppError
from paysys.core.logging import get_logger
from paysys.core.redis import HotPathRedis
from paysys.core.tokens import Principal

REVOKED_JTI_KEY = "auth:revoked:jti:{}"
REVOKED_SID_KEY = "auth:revoked:sid:{}"
NOT_BEFORE_KEY = "auth:nbf:{}"

log = get_logger("paysys.security")

# Called when Redis cannot answer: (principal) -> True when revoked. Installed by services that
# have the database (auth's session and user tables); None means "cannot tell here".
RevocationFallback = Callable[[Request, Principal], Awaitable[bool]]

# Never lower a user's "not before" (two revocations racing keep the later instant).
_SET_MAX_LUA = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""


async def revoke_token(redis: Redis, jti: str, expires_at: int) -> None:
    ttl = max(1, expires_at - int(time.time()) + 1)
    await redis.set(REVOKED_JTI_KEY.format(jti), "1", ex=ttl)


async def revoke_session(redis: Redis, sid: str, ttl: int) -> None:
    """Every access token of this session stops working (kept while any could live)."""
    await redis.set(REVOKED_SID_KEY.format(sid), "1", ex=max(1, ttl))


async def revoke_user_tokens_before(redis: Redis, user_id: uuid.UUID, at_ms: int, ttl: int) -> None:
    """Every token of this user issued before `at_ms` stops working (kept while any could live)."""
    await redis.eval(_SET_MAX_LUA, 1, NOT_BEFORE_KEY.format(user_id), str(at_ms), str(max(1, ttl)))


async def is_revoked(redis: HotPathRedis, principal: Principal) -> bool:
    """One round trip. Raises RedisError when Redis is unreachable (the caller decides)."""
    keys = [REVOKED_JTI_KEY.format(principal.jti), NOT_BEFORE_KEY.format(principal.id)]
    if principal.sid:
        keys.append(REVOKED_SID_KEY.format(principal.sid))
    marks = await redis.mget(keys)
    if marks[0] is not None or (len(marks) > 2 and marks[2] is not None):
        return True
    not_before = marks[1]
    return not_before is not None and principal.issued_at_ms < int(not_before)


_FALLBACK_SQL = text(
    """
    SELECT u.is_active AND u.deleted_at IS NULL AS usable,
           u.tokens_valid_after_ms AS not_before,
           (SELECT s.revoked FROM auth_sessions s
             WHERE s.id = :sid AND s.user_id = u.id) AS session_revoked,
           EXISTS (SELECT 1 FROM auth_revoked_access_tokens r
                    WHERE r.jti = :jti) AS token_revoked
    FROM users u WHERE u.id = :uid
    """
)


async def db_revocation_fallback(request: Request, principal: Principal) -> bool:
    """Redis is down: decide from the database (user row, the token's session, the token).

    Covers password change, deactivation, deletion, role change (the user's
    `tokens_valid_after_ms`), ended sessions (their revoked flag) and logout (the presented
    token's row in `auth_revoked_access_tokens`, also when its session lives on).
    """
    sid: uuid.UUID | None = None
    if principal.sid:
        try:
            sid = uuid.UUID(principal.sid)
        except ValueError:
            return True
    try:
        async with request.app.state.sessionmaker() as session:
            row = (
                await session.execute(
                    _FALLBACK_SQL, {"uid": principal.id, "sid": sid, "jti": principal.jti}
                )
            ).first()
    except Exception:
        log.warning("revocation fallback failed: database unreachable")
        raise AppError("SERVICE_UNAVAILABLE", "Cannot verify the token right now") from None
    if row is None or not row.usable or row.token_revoked:
        return True
    if principal.issued_at_ms < int(row.not_before):
        return True
    # Only a session known to be ended revokes: sessions are never deleted while their user
    # exists, and tokens minted by tools and tests (signed, so trusted) may name none.
    return sid is not None and row.session_revoked is True
