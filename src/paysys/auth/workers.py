"""Background work of the auth service.

`revocation_sync`: the database is the record of every revocation (users'
`tokens_valid_after_ms`, sessions' `revoked` flag, access tokens revoked on their own); Redis
holds the marks the hot path reads.
A revocation made while Redis was down (by auth or by admin) is in the database only; this
worker re-publishes recent revocations to Redis, so when Redis returns it knows them too.
It also forgets stale failed-login bookkeeping and revoked tokens past their expiry.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.auth.models import AuthSession, LoginThrottle, RevokedAccessToken
from paysys.core.logging import get_logger
from paysys.core.revocation import revoke_session, revoke_token, revoke_user_tokens_before
from paysys.core.runtime import Runtime
from paysys.users.models import User

log = get_logger("paysys.auth.workers")

SYNC_INTERVAL = 2.0
# Present while Redis holds everything synced so far; gone after a Redis restart or flush
# (marks are not persisted), which triggers a full re-publication.
SYNCED_KEY = "auth:revocations:synced"
OVERLAP = timedelta(seconds=60)  # covers transactions that commit a little after their now()
THROTTLE_KEEP = timedelta(hours=1)


async def sync_once(runtime: Runtime, since: datetime | None) -> datetime:
    """Publish revocations newer than `since` (None: everything that can still matter).
    Returns the new watermark; raises RedisError when Redis is still down."""
    access_ttl = runtime.settings.access_ttl
    ttl = int(access_ttl.total_seconds()) + 60
    if since is not None and not await runtime.redis.exists(SYNCED_KEY):
        since = None  # Redis lost its data: publish everything that can still matter
    async with runtime.sessionmaker() as session:
        now: datetime = (await session.execute(select(func.now()))).scalar_one()
        horizon = now - access_ttl - OVERLAP
        start = max(horizon, since - OVERLAP) if since is not None else horizon
        start_ms = int(start.timestamp() * 1000)
        user_rows = (
            await session.execute(
                select(User.id, User.tokens_valid_after_ms).where(
                    User.tokens_valid_after_ms > start_ms
                )
            )
        ).all()
        session_ids = (
            await session.execute(
                select(AuthSession.id).where(
                    AuthSession.revoked.is_(True), AuthSession.revoked_at > start
                )
            )
        ).scalars()
        sids = list(session_ids)
        tokens = (
            await session.execute(
                select(RevokedAccessToken.jti, RevokedAccessToken.expires_at).where(
                    RevokedAccessToken.revoked_at > start, RevokedAccessToken.expires_at > now
                )
            )
        ).all()
        await _forget_stale_throttles(session, now)
        await session.execute(delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now))
        await session.commit()
    for user_id, at_ms in user_rows:
        await revoke_user_tokens_before(runtime.redis, user_id, int(at_ms), ttl)
    for sid in sids:
        await revoke_session(runtime.redis, str(sid), ttl)
    for jti, expires_at in tokens:
        await revoke_token(runtime.redis, jti, int(expires_at.timestamp()))
    await runtime.redis.set(SYNCED_KEY, "1")
    return now


async def _forget_stale_throttles(session: AsyncSession, now: datetime) -> None:
    await session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.last_failure_at < now - THROTTLE_KEEP,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
        )
    )


async def revocation_sync(runtime: Runtime) -> None:
    watermark: datetime | None = None
    while not runtime.stopping.is_set():
        try:
            watermark = await sync_once(runtime, watermark)
        except RedisError:
            log.warning("revocation sync: redis unavailable; will retry")
        except Exception:
            log.exception("revocation sync failed; will retry")
        if await runtime.sleep(SYNC_INTERVAL):
            return
