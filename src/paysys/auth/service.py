"""Auth rules: register, login (lockout, equal answers), refresh rotation, logout, sessions.

Each function owns its transactions and writes its events through the outbox in the same
transaction as the change. No database connection or lock is held while argon2 runs
(api-contracts §3): a login or password change reads what it needs in one short transaction,
releases the connection, hashes, then writes in another short transaction that re-checks what
the hash was computed against (the stored password hash, the user's state).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.auth.models import AuthSession, RevokedAccessToken
from paysys.auth.throttle import LoginAttempt, Throttles
from paysys.core.clientip import client_key
from paysys.core.errors import AppError, Forbidden, NotFound, Unauthorized, ValidationFailed
from paysys.core.events.outbox import emit
from paysys.core.logging import get_logger
from paysys.core.passwords import (
    burn_password_check,
    check_password_policy,
    hash_password,
    verify_password,
)
from paysys.core.revocation import revoke_session, revoke_token
from paysys.core.timefmt import iso_z
from paysys.core.tokens import Principal, TokenCodec, token_hash
from paysys.users import accounts
from paysys.users.models import User

log = get_logger("paysys.auth.service")
T = TypeVar("T")

# A retried refresh (same consumed token) within this many ms gets the same new pair.
REFRESH_GRACE_MS = 10_000
USER_AGENT_MAX = 512
UNKNOWN_CLIENT = "unknown"
# A login re-verifies when the stored hash changed between its read and its write (another
# login upgraded it); more changes than this in that instant: answered as a failure.
LOGIN_READS = 3


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str | None
    user_agent: str | None

    @classmethod
    def of(cls, ip: str | None, user_agent: str | None) -> ClientInfo:
        return cls(ip, user_agent[:USER_AGENT_MAX] if user_agent else None)

    @property
    def key(self) -> str:
        """The lockout's name for this client: IPv4 as is, IPv6 per /64."""
        return client_key(self.ip) if self.ip else UNKNOWN_CLIENT


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


def _max_age(codec: TokenCodec) -> timedelta:
    return codec.settings.session_max_age_td


def _pair(
    codec: TokenCodec,
    user: User,
    sid: uuid.UUID,
    issued_ms: int,
    parent_jti: str | None = None,
    not_after: int | None = None,
) -> dict[str, Any]:
    """An access and a refresh token. `not_after` (epoch s): the session's absolute end, which
    the refresh token never outlives."""
    refresh_ttl = codec.refresh_ttl
    if not_after is not None:
        refresh_ttl = min(refresh_ttl, max(0, not_after - issued_ms // 1000))
    refresh, _ = codec.issue_refresh(
        user_id=user.id,
        family=str(sid),
        issued_ms=issued_ms,
        jti=_derived_jti(codec, "refresh", parent_jti) if parent_jti else None,
        ttl=refresh_ttl,
    )
    access, _ = codec.issue_access(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        sid=str(sid),
        token_version=user.token_version,
        issued_ms=issued_ms,
        jti=_derived_jti(codec, "access", parent_jti) if parent_jti else None,
    )
    return {"accessToken": access, "refreshToken": refresh, "expiresIn": codec.access_ttl}


async def _open_session(
    session: AsyncSession, codec: TokenCodec, user: User, client: ClientInfo
) -> dict[str, Any]:
    """A new session row (its times from the database's clock) and its first pair."""
    sid = uuid.uuid4()
    issued_ms = codec.clock()
    max_age_s = int(_max_age(codec).total_seconds())
    pair = _pair(codec, user, sid, issued_ms, not_after=issued_ms // 1000 + max_age_s)
    lifetime = timedelta(seconds=min(codec.refresh_ttl, max_age_s))
    session.add(
        AuthSession(
            id=sid,
            user_id=user.id,
            refresh_hash=token_hash(pair["refreshToken"]),
            rotated_at_ms=issued_ms,
            ip=client.ip,
            user_agent=client.user_agent,
            expires_at=func.now() + lifetime,
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
    # Hashes before its first query: no connection is held while argon2 runs.
    user = await accounts.create_user(
        session, email=email, password=password, name=name, role=role, via="register"
    )
    pair = await _open_session(session, codec, user, client)
    await session.commit()
    return {"user": accounts.user_json(user), **pair}


# --- login -------------------------------------------------------------------------------


async def _login_failed(
    session: AsyncSession,
    email: str,
    reason: str,
    client: ClientInfo,
    actor_id: uuid.UUID | None,
) -> None:
    """The audit event of a failed login, in its own short transaction."""
    await emit(
        session,
        "user.login_failed",
        {"email": email, "ip": client.ip, "reason": reason},
        actor_id=actor_id,
    )
    await session.commit()


# The write half of a sign-in whose password was verified: gets the re-checked user (locked
# FOR SHARE, or FOR UPDATE when its hash was upgraded) and commits what the sign-in produces.
Finish = Callable[[User], Awaitable[T]]


async def _sign_in(
    session: AsyncSession,
    throttles: Throttles,
    email: str,
    password: str,
    client: ClientInfo,
    finish: Finish[T],
) -> T:
    """Every sign-in (API login, `db studio`): unknown email, wrong password and deactivated
    account answer alike (401, same body, one argon2 verification each); the lockout counts all
    three, per account and client address, before the password is verified."""
    email = accounts.normalize_email(email)
    attempt = await throttles.begin_login(email, client.key)
    if not attempt.verdict.allowed:
        await _login_failed(session, email, "locked", client, None)
        raise _locked(attempt.verdict.retry_after)
    user_id: uuid.UUID | None = None
    reason = "wrong_password"
    for _ in range(LOGIN_READS):
        found = (
            await session.execute(
                select(User.id, User.password_hash, User.is_active).where(
                    func.lower(User.email) == email, User.deleted_at.is_(None)
                )
            )
        ).first()
        await session.commit()  # release the connection before hashing
        if found is None:
            await burn_password_check(password)
            reason = "unknown_email"
            break
        user_id = found.id
        ok, needs_rehash = await verify_password(found.password_hash, password)
        if not ok:
            reason = "wrong_password"
            break
        if not found.is_active:
            reason = "inactive"
            break
        # Parameters changed since this hash was made: upgrade it (not a user-visible update).
        upgraded = await hash_password(password, lane="login") if needs_rehash else None
        user = await _recheck(session, found.id, found.password_hash, upgraded)
        if user is None:
            continue  # the stored hash changed meanwhile: verify against the new one
        if isinstance(user, str):
            reason = user
            break
        result = await finish(user)
        await throttles.login_succeeded(attempt)
        return result
    await _fail_login(session, throttles, attempt, email, reason, client, user_id)


async def login(
    session: AsyncSession,
    codec: TokenCodec,
    throttles: Throttles,
    *,
    email: str,
    password: str,
    client: ClientInfo,
) -> dict[str, Any]:
    """`POST /api/auth/login`: a new session and its token pair."""

    async def finish(user: User) -> dict[str, Any]:
        pair = await _open_session(session, codec, user, client)
        await _logged_in(session, user, client)
        return {"user": accounts.user_json(user), **pair}

    return await _sign_in(session, throttles, email, password, client, finish)


async def check_credentials(
    session: AsyncSession,
    throttles: Throttles,
    *,
    email: str,
    password: str,
    client: ClientInfo,
    role: str | None = None,
) -> User:
    """A sign-in without tokens (`paysys db studio`): the same lockout, shared counts, timing
    and answers as `login` (401 INVALID_CREDENTIALS, 423 ACCOUNT_LOCKED); the verified, active
    user. With `role`, a user of another role is returned without a `user.logged_in` event
    (the caller refuses them)."""

    async def finish(user: User) -> User:
        if role is None or user.role == role:
            await _logged_in(session, user, client)
        else:
            await session.commit()  # the hash upgrade, if any; releases the row lock
        return user

    return await _sign_in(session, throttles, email, password, client, finish)


async def _logged_in(session: AsyncSession, user: User, client: ClientInfo) -> None:
    await emit(
        session,
        "user.logged_in",
        {"userId": str(user.id), "ip": client.ip, "userAgent": client.user_agent},
        actor_id=user.id,
    )
    await session.commit()


async def _recheck(
    session: AsyncSession,
    user_id: uuid.UUID,
    verified_hash: str,
    upgraded: str | None,
) -> User | str | None:
    """The user whose password was verified against `verified_hash`, locked until the sign-in
    commits; a failure reason when the account changed meanwhile; None when only the stored hash
    changed (verify again)."""
    query = select(User).where(User.id == user_id).execution_options(populate_existing=True)
    # FOR SHARE: waits for an in-flight password or role change, so the pair is built from the
    # row (role, token version) as it will be. FOR UPDATE when the hash is upgraded here.
    query = query.with_for_update() if upgraded else query.with_for_update(read=True)
    user = (await session.execute(query)).scalar_one_or_none()
    if user is None or user.deleted_at is not None:
        await session.rollback()
        return "unknown_email"
    if user.password_hash != verified_hash:
        await session.rollback()
        return None
    if not user.is_active:
        await session.rollback()
        return "inactive"
    if upgraded is not None:
        await session.execute(
            update(User)
            .where(User.id == user.id)
            .values(password_hash=upgraded, updated_at=User.updated_at)
            .execution_options(synchronize_session=False)
        )
    return user


async def _fail_login(
    session: AsyncSession,
    throttles: Throttles,
    attempt: LoginAttempt,
    email: str,
    reason: str,
    client: ClientInfo,
    user_id: uuid.UUID | None,
) -> NoReturn:
    throttles.login_failed(attempt, user_id, client.ip)
    await _login_failed(session, email, reason, client, user_id)
    raise _invalid_credentials()


# --- refresh -----------------------------------------------------------------------------


async def refresh(
    session: AsyncSession, redis: Redis, codec: TokenCodec, *, token: str, client: ClientInfo
) -> dict[str, Any]:
    """Rotate: the presented token is consumed and a new pair of the same family returned.
    A consumed token presented again revokes the family (401 TOKEN_REUSED), except a retry
    of the latest rotation within 10 s, which gets the very same pair again. A session older
    than `SESSION_MAX_AGE` (the database's clock on both ends) is over: 401 TOKEN_EXPIRED."""
    claims = codec.decode_refresh(token)
    try:
        sid = uuid.UUID(claims["fam"])
        user_id = uuid.UUID(claims["sub"])
    except ValueError:
        raise Unauthorized("TOKEN_INVALID", "Token is invalid") from None
    found = (
        await session.execute(
            select(AuthSession, func.now()).where(AuthSession.id == sid).with_for_update()
        )
    ).first()
    if found is None:
        raise Unauthorized("TOKEN_INVALID", "Session has ended")
    row, db_now = found
    if row.user_id != user_id or row.revoked:
        raise Unauthorized("TOKEN_INVALID", "Session has ended")
    session_end: datetime = row.created_at + _max_age(codec)
    if db_now >= session_end:
        raise Unauthorized("TOKEN_EXPIRED", "Session has expired; sign in again")
    # FOR SHARE waits for an in-flight role change / deactivation to commit, so the new
    # access token is built from the row (role, token version) as it will be.
    user = (
        await session.execute(
            select(User)
            .where(User.id == user_id)
            .with_for_update(read=True)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if user is None or not user.is_active or user.deleted_at is not None:
        raise Unauthorized("TOKEN_INVALID", "Session has ended")
    presented = token_hash(token)
    not_after = int(session_end.timestamp())
    if hmac.compare_digest(presented, row.refresh_hash):
        issued_ms = max(codec.clock(), row.rotated_at_ms + 1)
        pair = _pair(codec, user, sid, issued_ms, str(claims["jti"]), not_after)
        row.previous_hash = presented
        row.previous_jti = str(claims["jti"])
        row.refresh_hash = token_hash(pair["refreshToken"])
        row.rotated_at_ms = issued_ms
        row.last_used_at = db_now
        row.expires_at = min(db_now + timedelta(seconds=codec.refresh_ttl), session_end)
        if client.ip:
            row.ip = client.ip
        if client.user_agent:
            row.user_agent = client.user_agent
        row.updated_at = db_now
        await session.commit()
        return pair
    if (
        row.previous_hash is not None
        and hmac.compare_digest(presented, row.previous_hash)
        and codec.clock() - row.rotated_at_ms <= REFRESH_GRACE_MS
    ):
        pair = _pair(codec, user, sid, row.rotated_at_ms, str(claims["jti"]), not_after)
        if hmac.compare_digest(token_hash(pair["refreshToken"]), row.refresh_hash):
            await session.commit()
            return pair
    # A consumed token again: someone holds a copy. End the whole family.
    row.revoked = True
    row.revoked_at = db_now
    row.revoke_reason = "refresh_token_reused"
    await session.flush()
    await _mark_sessions_revoked(redis, [sid], codec)
    await session.commit()
    log.warning("refresh token reuse detected; family revoked", session_id=str(sid))
    raise Unauthorized("TOKEN_REUSED", "Refresh token was already used; the session is ended")


async def _mark_sessions_revoked(
    redis: Redis, sids: list[uuid.UUID], codec: TokenCodec, principal: Principal | None = None
) -> None:
    """Redis marks of ended sessions and a logged-out token, set just before the commit: if
    the commit then fails they only refuse early what was being ended anyway (fail-safe).
    Redis down: the rows still revoke (fallback) and the sync worker re-publishes the marks."""
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
        # Every token of the user issued until now dies: a token version bump, which the
        # gateway checks at the edge too, plus every session's revoked flag.
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
            expires_at=datetime.fromtimestamp(principal.expires_at, tz=UTC),
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
    await accounts.publish_revocations(session)


async def me(session: AsyncSession, principal: Principal) -> dict[str, Any]:
    user = await accounts.get_user(session, principal.id)
    return accounts.user_json(user)


def _too_many_changes(seconds: int) -> AppError:
    return AppError(
        "RATE_LIMIT_EXCEEDED",
        "Too many password changes; try again later",
        details={"retryAfter": seconds},
        headers={"Retry-After": str(seconds)},
    )


async def change_password(
    session: AsyncSession,
    redis: Redis,
    throttles: Throttles,
    principal: Principal,
    *,
    current_password: str,
    new_password: str,
    client: ClientInfo,
) -> None:
    """At most `PASSWORD_CHANGE_MAX` changes per user per window (429). A wrong current
    password → 401 INVALID_CREDENTIALS and counts as a failed login for the account and the
    client address (so a stolen access token cannot be used to guess the password). Every token
    and session of the user is revoked: all devices sign in again with the new password.
    No connection or lock is held while the current password is verified or the new one hashed.
    """
    found = (
        await session.execute(
            select(User.id, User.email, User.password_hash).where(
                User.id == principal.id, User.deleted_at.is_(None)
            )
        )
    ).first()
    await session.commit()  # release the connection before hashing
    if found is None:
        raise NotFound("USER_NOT_FOUND", "User not found")
    if new_password == current_password:
        raise ValidationFailed("newPassword", "must differ from the current password")
    check_password_policy(new_password, found.email, "newPassword")
    ticket = await throttles.begin_change(found.id)
    if not ticket.allowed:
        raise _too_many_changes(ticket.retry_after)
    try:
        attempt = await throttles.begin_login(accounts.normalize_email(found.email), client.key)
        if not attempt.verdict.allowed:
            raise _locked(attempt.verdict.retry_after)
        ok, _ = await verify_password(found.password_hash, current_password, lane="change")
        if not ok:
            throttles.login_failed(attempt, found.id, client.ip)
            raise _invalid_credentials()
        await throttles.login_succeeded(attempt)
        new_hash = await accounts.new_password_hash(new_password, found.email)
        user = await accounts.set_password(
            session, redis, found.id, new_hash, replaces=found.password_hash
        )
        await emit(session, "user.password_changed", {"userId": str(user.id)}, actor_id=user.id)
        await session.commit()
    except BaseException:
        await throttles.release_change(ticket)
        raise
    await accounts.publish_revocations(session)


async def list_sessions(
    session: AsyncSession, codec: TokenCodec, principal: Principal
) -> dict[str, Any]:
    rows = (
        await session.execute(
            select(AuthSession)
            .where(
                AuthSession.user_id == principal.id,
                AuthSession.revoked.is_(False),
                AuthSession.expires_at > func.now(),
                AuthSession.created_at > func.now() - _max_age(codec),
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
