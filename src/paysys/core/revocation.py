"""Revocation: marks in Redis checked on every authenticated request, the database as fallback.

Marks (one `MGET` per request, `is_revoked`): the token's `jti` (logout), its session (`sid`, an
ended session) and the user's current token version. An access token whose `ver` is below the
user's version was issued before a password change, role change, deactivation, deletion or
logout of all sessions (api-contracts §1.5): integers, so the clocks of the hosts that issued,
revoked and check a token never matter. When Redis is down a service decides from the database
(`db_revocation_fallback`, installed in every FastAPI service by `create_service_app`); the
gateway, which has no database, then leaves the check to the services, which always check again.

A version bump is published to Redis only **after** its transaction committed (`stage` in the
transaction, `publish_committed` after the commit): a bump published and then rolled back would
refuse every token the user gets next. A publication that does not happen (Redis down, a caller
that forgot) is made by the auth service's sync worker within seconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.requests import Request

from paysys.core.errors import AppError
from paysys.core.logging import get_logger
from paysys.core.redis import HotPathRedis
from paysys.core.tokens import Principal

REVOKED_JTI_KEY = "auth:revoked:jti:{}"
REVOKED_SID_KEY = "auth:revoked:sid:{}"
TOKEN_VERSION_KEY = "auth:ver:{}"

log = get_logger("paysys.security")

# Called when Redis cannot answer: (principal) -> True when revoked. Installed by services that
# have the database (auth's session and user tables); None means "cannot tell here".
RevocationFallback = Callable[[Request, Principal], Awaitable[bool]]

# Never lower a user's version (two publications racing keep the higher one).
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


async def publish_token_version(redis: Redis, user_id: uuid.UUID, version: int, ttl: int) -> None:
    """Tokens of this user with a lower `ver` stop working. Kept while any such token could
    live (`ttl`): afterwards every token issued under an older version has expired anyway."""
    await redis.eval(
        _SET_MAX_LUA, 1, TOKEN_VERSION_KEY.format(user_id), str(version), str(max(1, ttl))
    )


async def is_revoked(redis: HotPathRedis, principal: Principal) -> bool:
    """One round trip. Raises RedisError when Redis is unreachable (the caller decides)."""
    keys = [REVOKED_JTI_KEY.format(principal.jti), TOKEN_VERSION_KEY.format(principal.id)]
    if principal.sid:
        keys.append(REVOKED_SID_KEY.format(principal.sid))
    marks = await redis.mget(keys)
    if marks[0] is not None or (len(marks) > 2 and marks[2] is not None):
        return True
    current = marks[1]
    return current is not None and principal.token_version < int(current)


# --- publication after commit -------------------------------------------------------------

_STAGED = "paysys.revocations.staged"
_COMMITTED = "paysys.revocations.committed"
_LISTENING = "paysys.revocations.listening"


@dataclass
class _Marks:
    redis: Redis | None
    versions: dict[uuid.UUID, int] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)

    def merge(self, other: _Marks) -> None:
        self.redis = self.redis or other.redis
        for user_id, version in other.versions.items():
            self.versions[user_id] = max(version, self.versions.get(user_id, version))
        self.sessions |= other.sessions


def _on_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint: the transaction is not over yet
        return
    staged: _Marks | None = session.info.pop(_STAGED, None)
    if staged is not None:
        committed: _Marks | None = session.info.get(_COMMITTED)
        if committed is None:
            session.info[_COMMITTED] = staged
        else:
            committed.merge(staged)


def _on_rollback(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_STAGED, None)


def stage(
    session: AsyncSession,
    redis: Redis | None,
    *,
    user_id: uuid.UUID | None = None,
    version: int | None = None,
    sessions: Iterable[Any] = (),
) -> None:
    """Remember marks to publish once this session's transaction commits (`publish_committed`).
    A rollback forgets them."""
    sync = session.sync_session
    if _LISTENING not in sync.info:
        event.listen(sync, "after_commit", _on_commit)
        event.listen(sync, "after_rollback", _on_rollback)
        sync.info[_LISTENING] = True
    marks = sync.info.get(_STAGED)
    if marks is None:
        marks = sync.info[_STAGED] = _Marks(redis)
    marks.redis = marks.redis or redis
    if user_id is not None and version is not None:
        marks.merge(_Marks(None, {user_id: version}))
    marks.sessions.update(str(sid) for sid in sessions)


async def publish_committed(session: AsyncSession, ttl: int) -> None:
    """Publish the marks of the transactions this session committed so far (call after the
    commit). Redis down: logged; the database already revokes (fallback) and the auth service's
    sync worker publishes them once Redis is back."""
    marks: _Marks | None = session.sync_session.info.pop(_COMMITTED, None)
    if marks is None or marks.redis is None:
        return
    try:
        for user_id, version in marks.versions.items():
            await publish_token_version(marks.redis, user_id, version, ttl)
        for sid in marks.sessions:
            await revoke_session(marks.redis, sid, ttl)
    except RedisError:
        log.warning("redis unavailable while revoking; database fallback in force")


# --- database fallback --------------------------------------------------------------------

_FALLBACK_SQL = text(
    """
    SELECT u.is_active AND u.deleted_at IS NULL AS usable,
           u.token_version AS version,
           (SELECT s.revoked FROM auth_sessions s
             WHERE s.id = :sid AND s.user_id = u.id) AS session_revoked,
           EXISTS (SELECT 1 FROM auth_revoked_access_tokens r
                    WHERE r.jti = :jti) AS token_revoked
    FROM users u WHERE u.id = :uid
    """
)


async def db_revocation_fallback(request: Request, principal: Principal) -> bool:
    """Redis is down: decide from the database (user row, the token's session, the token).

    Covers password change, deactivation, deletion, role change and logout of all sessions (the
    user's `token_version`), ended sessions (their revoked flag) and logout (the presented
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
    if principal.token_version < int(row.version):
        return True
    # Only a session known to be ended revokes: sessions are never deleted while their user
    # exists, and tokens minted by tools and tests (signed, so trusted) may name none.
    return sid is not None and row.session_revoked is True
