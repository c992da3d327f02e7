"""Auth rules: register, login (lockout, equal answers), refresh rotation, logout, sessions.

Each function owns its transaction (commits, or commits the bookkeeping of a failure and then
raises) and writes its events through the outbox in that same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.auth import lockout
from paysys.auth.models import AuthSession, LoginThrottle, RevokedAccessToken
from paysys.core.errors import AppError, Forbidden, NotFound, Unauthorized, ValidationFailed
from paysys.core.events.outbox import emit
from paysys.core.logging import get_logger
from paysys.core.passwords import burn_password_check, hash_password, verify_password
from paysys.core.revocation import revoke_session, revoke_token
from paysys.core.timefmt import iso_z
from paysys.core.tokens import Principal, TokenCodec, now_ms, token_hash
from paysys.users import accounts
from paysys.users.models import User

log = get_logger("paysys.auth.service")

# A retried refresh (same consumed token) within this many ms gets the same new pair.
REFRESH_GRACE_MS = 10_000
USER_AGENT_MAX = 512


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str | None
    user_agent: str | None

    @classmethod
    def of(cls, ip: str | None, user_agent: str | None) -> ClientInfo:
        return cls(ip, user_agent[:USER_AGENT_MAX] if user_agent else None)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _invalid_credentials() -> AppError:
    return Unauthorized("INVALID_CREDENTIALS", "Invalid email or password")


def _locked(seconds: int) -> AppError:
    return AppError(
        "ACCOUNT_LOCKED",
        "Too many failed login attempts; try again later",
        details={"retryAfter": seconds},
        headers={"Retry-After": str(seconds)},
    )


def _derived_jti(codec: TokenCodec, kind: str, parent_jti: str) -> str:
    """The jti of a rotated token, derived from the consumed one: a retried refresh within the
    grace period rebuilds exactly the same pair without any token stored in clear."""
    digest = hmac.new(
        codec.settings.jwt_refresh_secret.encode(),
        f"{kind}:{parent_jti}".encode(),
        hashlib.sha256,
    ).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _pair(
    codec: TokenCodec,
    user: User,
    sid: uuid.UUID,
    issued_ms: int,
    parent_jti: str | None = None,
) -> dict[str, Any]:
    refresh, _ = codec.issue_refresh(
        user_id=user.id,
        family=str(sid),
        issued_ms=issued_ms,
        jti=_derived_jti(codec, "refresh", parent_jti) if parent_jti else None,
    )
    access, _ = codec.issue_access(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        sid=str(sid),
        issued_ms=issued_ms,
        jti=_derived_jti(codec, "access", parent_jti) if parent_jti else None,
    )
    return {"accessToken": access, "refreshToken": refresh, "expiresIn": codec.access_ttl}


async def _open_session(
    session: AsyncSession, codec: TokenCodec, user: User, client: ClientInfo
) -> dict[str, Any]:
    sid = uuid.uuid4()
    issued_ms = now_ms()
    pair = _pair(codec, user, sid, issued_ms)
    now = utcnow()
    session.add(
        AuthSession(
            id=sid,
            user_id=user.id,
            refresh_hash=token_hash(pair["refreshToken"]),
            rotated_at_ms=issued_ms,
            ip=client.ip,
            user_agent=client.user_agent,
            last_used_at=now,
            expires_at=now + timedelta(seconds=codec.refresh_ttl),
        )
    )
    return pair


# --- register ----------------------------------------------------------------------------


async def register(
    session: AsyncSession,
    codec: TokenCodec,
    *,
    email: str,
    password: str,
    name: str,
    role: str,
    client: ClientInfo,
) -> dict[str, Any]:
    if role == "ADMIN":
        raise Forbidden("Registering as ADMIN is not allowed")
    user = await accounts.create_user(
        session, email=email, password=password, name=name, role=role, via="register"
    )
    pair = await _open_session(session, codec, user, client)
    await session.commit()
    return {"user": accounts.user_json(user), **pair}


# --- login -------------------------------------------------------------------------------


def _state(row: LoginThrottle | None) -> lockout.ThrottleState | None:
    if row is None:
        return None
    return lockout.ThrottleState(
        window_start=row.window_start,
        failures=row.failures,
        lock_level=row.lock_level,
        locked_until=row.locked_until,
        hour_start=row.hour_start,
        hour_failures=row.hour_failures,
        last_failure_at=row.last_failure_at,
    )


async def _lock_account_key(session: AsyncSession, email: str) -> LoginThrottle | None:
    """Serialise attempts on one account (so parallel guesses cannot outrun the count) and
    read its throttle row."""
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended("auth-login:" + email, 0)))
    )
    return await session.get(LoginThrottle, email, populate_existing=True)


async def _record_failure(
    session: AsyncSession, email: str, row: LoginThrottle | None, now: datetime
) -> None:
    state = lockout.record_failure(_state(row), now)
    values = {
        "window_start": state.window_start,
        "failures": state.failures,
        "lock_level": state.lock_level,
        "locked_until": state.locked_until,
        "hour_start": state.hour_start,
        "hour_failures": state.hour_failures,
        "last_failure_at": state.last_failure_at,
    }
    stmt = pg_insert(LoginThrottle).values(email=email, **values)
    await session.execute(stmt.on_conflict_do_update(index_elements=["email"], set_=values))


async def _login_failed(
    session: AsyncSession,
    email: str,
    reason: str,
    client: ClientInfo,
    actor_id: uuid.UUID | None,
) -> None:
    await emit(
        session,
        "user.login_failed",
        {"email": email, "ip": client.ip, "reason": reason},
        actor_id=actor_id,
    )


async def login(
    session: AsyncSession, codec: TokenCodec, *, email: str, password: str, client: ClientInfo
) -> dict[str, Any]:
    """Unknown email, wrong password and deactivated account answer alike (401, same body,
    one argon2 verification each); the lockout counts all three."""
    email = accounts.normalize_email(email)
    now = utcnow()
    throttle = await _lock_account_key(session, email)
    wait = lockout.retry_after(_state(throttle), now)
    if wait is not None:
        await _login_failed(session, email, "locked", client, None)
        await session.commit()
        raise _locked(wait)
    user = (
        await session.execute(
            select(User)
            .where(func.lower(User.email) == email, User.deleted_at.is_(None))
            .with_for_update(read=True)
        )
    ).scalar_one_or_none()
    if user is None:
        await burn_password_check(password)
        ok, needs_rehash, reason = False, False, "unknown_email"
    else:
        ok, needs_rehash = await verify_password(user.password_hash, password)
        reason = "wrong_password"
        if ok and not user.is_active:
            ok, reason = False, "inactive"
    if not ok or user is None:
        await _record_failure(session, email, throttle, now)
        await _login_failed(session, email, reason, client, user.id if user else None)
        await session.commit()
        raise _invalid_credentials()
    if throttle is not None:
        await session.execute(delete(LoginThrottle).where(LoginThrottle.email == email))
    if needs_rehash:
        # Parameters changed since this hash was made: upgrade it (not a user-visible update).
        await session.execute(
            update(User)
            .where(User.id == user.id)
            .values(password_hash=await hash_password(password), updated_at=User.updated_at)
            .execution_options(synchronize_session=False)
        )
    pair = await _open_session(session, codec, user, client)
    await emit(
        session,
        "user.logged_in",
        {"userId": str(user.id), "ip": client.ip, "userAgent": client.user_agent},
        actor_id=user.id,
    )
    await session.commit()
    return {"user": accounts.user_json(user), **pair}


# --- refresh -----------------------------------------------------------------------------


async def refresh(
    session: AsyncSession, redis: Redis, codec: TokenCodec, *, token: str, client: ClientInfo
) -> dict[str, Any]:
    """Rotate: the presented token is consumed and a new pair of the same family returned.
    A consumed token presented again revokes the family (401 TOKEN_REUSED), except a retry
    of the latest rotation within 10 s, which gets the very same pair again."""
    claims = codec.decode_refresh(token)
    try:
        sid = uuid.UUID(claims["fam"])
        user_id = uuid.UUID(claims["sub"])
    except ValueError:
        raise Unauthorized("TOKEN_INVALID", "Token is invalid") from None
    row = (
        await session.execute(select(AuthSession).where(AuthSession.id == sid).with_for_update())
    ).scalar_one_or_none()
    if row is None or row.user_id != user_id or row.revoked:
        raise Unauthorized("TOKEN_INVALID", "Session has ended")
    # FOR SHARE waits for an in-flight role change / deactivation to commit, so the new
    # access token is built from the row as it will be.
    user = (
        await session.execute(select(User).where(User.id == user_id).with_for_update(read=True))
    ).scalar_one_or_none()
    if user is None or not user.is_active or user.deleted_at is not None:
        raise Unauthorized("TOKEN_INVALID", "Session has ended")
    presented = token_hash(token)
    now = utcnow()
    if hmac.compare_digest(presented, row.refresh_hash):
        issued_ms = max(now_ms(), row.rotated_at_ms + 1)
        pair = _pair(codec, user, sid, issued_ms, parent_jti=str(claims["jti"]))
        row.previous_hash = presented
        row.previous_jti = str(claims["jti"])
        row.refresh_hash = token_hash(pair["refreshToken"])
        row.rotated_at_ms = issued_ms
        row.last_used_at = now
        row.expires_at = now + timedelta(seconds=codec.refresh_ttl)
        if client.ip:
            row.ip = client.ip
        if client.user_agent:
            row.user_agent = client.user_agent
        row.updated_at = now
        await session.commit()
        return pair
    if (
        row.previous_hash is not None
        and hmac.compare_digest(presented, row.previous_hash)
        and now_ms() - row.rotated_at_ms <= REFRESH_GRACE_MS
    ):
        pair = _pair(codec, user, sid, row.rotated_at_ms, parent_jti=str(claims["jti"]))
        if hmac.compare_digest(token_hash(pair["refreshToken"]), row.refresh_hash):
            await session.commit()
            return pair
    # A consumed token again: someone holds a copy. End the whole family.
    row.revoked = True
    row.revoked_at = now
    row.revoke_reason = "refresh_token_reused"
    await session.flush()
    await _mark_sessions_revoked(redis, [sid], codec)
    await session.commit()
    log.warning("refresh token reuse detected; family revoked", session_id=str(sid))
    raise Unauthorized("TOKEN_REUSED", "Refresh token was already used; the session is ended")


async def _mark_sessions_revoked(
    redis: Redis, sids: list[uuid.UUID], codec: TokenCodec, principal: Principal | None = None
) -> None:
    """Redis marks, set just before commit (see paysys.users.accounts). Redis down: the session
    rows still revoke (fallback) and the sync worker re-publishes the marks."""
    ttl = codec.access_ttl + 60
    try:
        for sid in sids:
            await revoke_session(redis, str(sid), ttl)
        if principal is not None:
            await revoke_token(redis, principal.jti, principal.expires_at)
    except RedisError:
        log.warning("redis unavailable while revoking sessions; database fallback in force")


async def _end_sessions(
    session: AsyncSession, user_id: uuid.UUID, reason: str, only: uuid.UUID | None = None
) -> list[uuid.UUID]:
    stmt = (
        update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked.is_(False))
        .values(revoked=True, revoked_at=func.now(), revoke_reason=reason, updated_at=func.now())
        .returning(AuthSession.id)
    )
    if only is not None:
        stmt = stmt.where(AuthSession.id == only)
    return list((await session.execute(stmt)).scalars())


# --- logout, sessions --------------------------------------------------------------------


def _sid(principal: Principal) -> uuid.UUID | None:
    try:
        return uuid.UUID(principal.sid) if principal.sid else None
    except ValueError:
        return None


async def logout(
    session: AsyncSession,
    redis: Redis,
    codec: TokenCodec,
    principal: Principal,
    *,
    refresh_token: str | None,
    all_sessions: bool,
) -> None:
    """No body: end the access token's session. `refreshToken`: end that token's session
    (it must be the caller's). `allSessions`: end all of them. The presented access token
    is revoked in every case."""
    ended: list[uuid.UUID] = []
    target: uuid.UUID | None = None  # the one session this logout ends
    if all_sessions:
        # Every token of the user issued until now dies: the per-user "not before" mark, which
        # the gateway checks at the edge too, plus every session's revoked flag.
        user = await accounts.get_user(session, principal.id, lock=True)
        await accounts.revoke_user(session, redis, user, end_sessions=True, reason="logout_all")
    else:
        target = _sid(principal)
        if refresh_token:
            claims = codec.decode_refresh(refresh_token)
            if claims.get("sub") != str(principal.id):
                raise Unauthorized("TOKEN_INVALID", "Refresh token does not belong to you")
            try:
                target = uuid.UUID(claims["fam"])
            except ValueError:
                raise Unauthorized("TOKEN_INVALID", "Token is invalid") from None
        ended = await _end_sessions(session, principal.id, "logout", only=target) if target else []
    # The presented token's own record: the database fallback and the sync worker read it when
    # Redis cannot (its session may live on, e.g. a logout that ended another session).
    await session.execute(
        pg_insert(RevokedAccessToken)
        .values(
            jti=principal.jti,
            user_id=principal.id,
            expires_at=datetime.fromtimestamp(principal.expires_at, UTC),
        )
        .on_conflict_do_nothing()
    )
    logged_out: dict[str, Any] = {"userId": str(principal.id), "allSessions": all_sessions}
    if target is not None:
        logged_out["sessionId"] = str(target)
    await emit(session, "user.logged_out", logged_out, actor_id=principal.id)
    await session.flush()
    await _mark_sessions_revoked(redis, ended, codec, principal)
    await session.commit()


async def me(session: AsyncSession, principal: Principal) -> dict[str, Any]:
    user = await accounts.get_user(session, principal.id)
    return accounts.user_json(user)


async def change_password(
    session: AsyncSession,
    redis: Redis,
    principal: Principal,
    *,
    current_password: str,
    new_password: str,
    client: ClientInfo,
) -> None:
    """Wrong current password → 401 INVALID_CREDENTIALS (counted by the lockout, so a stolen
    access token cannot be used to guess the password); then the policy. Every token and
    session of the user is revoked: all devices sign in again with the new password."""
    # Same lock order as login: the account's advisory lock first, then the user row.
    email = accounts.normalize_email((await accounts.get_user(session, principal.id)).email)
    now = utcnow()
    throttle = await _lock_account_key(session, email)
    user = await accounts.get_user(session, principal.id, lock=True)
    wait = lockout.retry_after(_state(throttle), now)
    if wait is not None:
        raise _locked(wait)
    ok, _ = await verify_password(user.password_hash, current_password)
    if not ok:
        await _record_failure(session, email, throttle, now)
        await session.commit()
        raise _invalid_credentials()
    if new_password == current_password:
        raise ValidationFailed("newPassword", "must differ from the current password")
    await accounts.set_password(session, redis, user, new_password)
    await emit(session, "user.password_changed", {"userId": str(user.id)}, actor_id=user.id)
    await session.commit()


async def list_sessions(session: AsyncSession, principal: Principal) -> dict[str, Any]:
    rows = (
        await session.execute(
            select(AuthSession)
            .where(
                AuthSession.user_id == principal.id,
                AuthSession.revoked.is_(False),
                AuthSession.expires_at > func.now(),
            )
            .order_by(AuthSession.created_at.desc(), AuthSession.id)
        )
    ).scalars()
    current = principal.sid
    return {
        "sessions": [
            {
                "id": str(row.id),
                "createdAt": iso_z(row.created_at),
                "lastUsedAt": iso_z(row.last_used_at),
                "userAgent": row.user_agent,
                "ip": row.ip,
                "current": str(row.id) == current,
            }
            for row in rows
        ]
    }


async def revoke_one_session(
    session: AsyncSession,
    redis: Redis,
    codec: TokenCodec,
    principal: Principal,
    session_id: uuid.UUID,
) -> None:
    ended = await _end_sessions(session, principal.id, "revoked_by_user", only=session_id)
    if not ended:
        raise NotFound("SESSION_NOT_FOUND", "Session not found")
    await emit(
        session,
        "user.logged_out",
        {"userId": str(principal.id), "allSessions": False, "sessionId": str(session_id)},
        actor_id=principal.id,
    )
    await session.flush()
    await _mark_sessions_revoked(redis, ended, codec)
    await session.commit()
