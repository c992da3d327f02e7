"""Background work of the auth service.

`revocation_sync`: the database is the record of every revocation (users' `token_version`,
sessions' `revoked` flag, access tokens revoked on their own); Redis holds the marks the hot
path reads. A revocation made while Redis was down (by auth or by admin), or one whose caller
did not publish it after its commit, is in the database only; this worker re-publishes recent
revocations to Redis, so when Redis returns it knows them too. "Recent" is judged by the
database's clock alone (`token_version_at`, `revoked_at`). It also forgets the lockout's stale
PostgreSQL rows and revoked tokens past their expiry.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy import delete, func, select

from paysys.auth.models import AuthSession, RevokedAccessToken
from paysys.auth.throttle import forget_stale
from paysys.core.config import Settings, parse_duration
from paysys.core.logging import get_logger
from paysys.core.revocation import publish_token_version, revoke_session, revoke_token
from paysys.core.runtime import Runtime
from paysys.users.models import User

log = get_logger("paysys.auth.workers")

SYNC_INTERVAL = 2.0
# Present while Redis holds everything synced so far; gone after a Redis restart or flush
# (marks are not persisted), which triggers a full re-publication.
SYNCED_KEY = "auth:revocations:synced"
OVERLAP = timedelta(seconds=60)  # covers transactions that commit a little after their now()


def throttle_keep(settings: Settings) -> timedelta:
    """How long the lockout's PostgreSQL rows can matter: the longest of its windows."""
    return max(
        timedelta(hours=1),
        parse_duration(settings.lockout_window),
        parse_duration(settings.password_change_window),
    )


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
        user_rows = (
            await session.execute(
                select(User.id, User.token_version).where(User.token_version_at > start)
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
        await forget_stale(session, now, throttle_keep(runtime.settings))
        await session.execute(delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now))
        await session.commit()
    for user_id, version in user_rows:
        await publish_token_version(runtime.redis, user_id, int(version), ttl)
    for sid in sids:
        await revoke_session(runtime.redis, str(sid), ttl)
    for jti, expires_at in tokens:
        await revoke_token(runtime.redis, jti, int(expires_at.timestamp()))
    await runtime.redis.set(SYNCED_KEY, "1")
    return now


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
