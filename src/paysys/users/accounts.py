"""User accounts: one code path for policy, hashing, revocation and events.

Used by the auth service (register, password change, logout everywhere) and the admin service
(create, update, role, status, delete). Every function runs inside the caller's transaction and
never commits: the caller's service layer commits once, so the change and its outbox event land
together. Revocation ends the user's sessions too (`auth_sessions`, the auth service's table).

No database connection is held while argon2 runs (api-contracts §3): `create_user` hashes
before its first query, and a password change hashes first (`new_password_hash`) and then calls
`set_password` with the hash, which re-checks in its own short transaction that the password it
replaces is still the one the caller verified. Callers hash with no transaction open.

Revocation (api-contracts §1.5): `revoke_user` bumps `users.token_version` under the user's row
lock (a concurrent refresh waits and then reads the new row and version) and ends sessions; the
Redis marks are staged and published by the caller right after its commit
(`publish_revocations`), never before it: a bump that was rolled back must not refuse the tokens
the user gets next. If Redis is unreachable, or a caller never publishes, the database still
revokes: every service's `db_revocation_fallback` reads it while Redis is down, and the auth
service's sync worker publishes recent bumps to Redis within seconds.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from paysys.auth.models import AuthSession
from paysys.core.config import get_settings
from paysys.core.errors import AppError, Conflict, NotFound, Unauthorized, ValidationFailed
from paysys.core.events.outbox import emit
from paysys.core.passwords import check_password_policy, hash_password
from paysys.core.revocation import publish_committed, stage
from paysys.core.schemas import EMAIL_PATTERN
from paysys.core.timefmt import iso_or_none
from paysys.core.tokens import ROLES
from paysys.users.models import User

NAME_MAX = 100
EMAIL_MAX = 254
EMAIL_RE = re.compile(EMAIL_PATTERN)  # the OpenAPI documents this very pattern


def normalize_email(email: str) -> str:
    return email.strip().lower()


def user_json(user: User) -> dict[str, Any]:
    """The user JSON of api-contracts §3 (never a hash)."""
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "isActive": user.is_active,
        "emailVerified": user.email_verified,
        "createdAt": iso_or_none(user.created_at),
        "updatedAt": iso_or_none(user.updated_at),
    }


def _event_user(user: User) -> dict[str, Any]:
    return user_json(user)


def validate_email(email: str, field: str = "email") -> str:
    email = normalize_email(email)
    if not email or len(email) > EMAIL_MAX or not EMAIL_RE.match(email):
        raise ValidationFailed(field, "must be a valid email address")
    return email


def validate_name(name: str, field: str = "name") -> str:
    name = name.strip()
    if not name:
        raise ValidationFailed(field, "must not be empty")
    if len(name) > NAME_MAX:
        raise ValidationFailed(field, f"must be at most {NAME_MAX} characters")
    return name


def validate_role(role: str, field: str = "role") -> str:
    if role not in ROLES:
        raise ValidationFailed(field, "must be one of " + ", ".join(ROLES))
    return role


async def _email_taken(session: AsyncSession, email: str, except_id: uuid.UUID | None) -> bool:
    query = select(User.id).where(func.lower(User.email) == email)
    if except_id is not None:
        query = query.where(User.id != except_id)
    return (await session.execute(query.limit(1))).first() is not None


async def get_user(session: AsyncSession, user_id: uuid.UUID, *, lock: bool = False) -> User:
    """A live (not deleted) user, or 404 USER_NOT_FOUND. `lock` takes the row lock."""
    query = select(User).where(User.id == user_id, User.deleted_at.is_(None))
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    user = (await session.execute(query)).scalar_one_or_none()
    if user is None:
        raise NotFound("USER_NOT_FOUND", "User not found")
    return user


def revocation_ttl() -> int:
    # Access tokens are the only tokens checked against these marks (refresh tokens are checked
    # against the session rows), so the marks live as long as any access token could.
    return int(get_settings().access_ttl.total_seconds()) + 60


async def revoke_user(
    session: AsyncSession,
    redis: Redis | None,
    user: User,
    *,
    end_sessions: bool,
    reason: str,
) -> int:
    """Revoke every access token issued to `user` until now: bump its token version; returns
    the new version. Publish after the commit (`publish_revocations`).

    `end_sessions` also revokes every refresh family (password change, deactivation,
    deletion, logout of all sessions); a role change keeps the sessions so the next refresh
    carries the new role. Call after the user's row was changed (its row lock is held).
    """
    await session.flush()
    version = (
        await session.execute(
            update(User)
            .where(User.id == user.id)
            .values(token_version=User.token_version + 1, token_version_at=func.now())
            .returning(User.token_version)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one()
    set_committed_value(user, "token_version", version)
    ended: list[uuid.UUID] = []
    if end_sessions:
        ended = list(
            (
                await session.execute(
                    update(AuthSession)
                    .where(AuthSession.user_id == user.id, AuthSession.revoked.is_(False))
                    .values(revoked=True, revoked_at=func.now(), revoke_reason=reason)
                    .returning(AuthSession.id)
                )
            ).scalars()
        )
    stage(session, redis, user_id=user.id, version=version, sessions=ended)
    return int(version)


async def publish_revocations(session: AsyncSession) -> None:
    """After the commit: tell Redis about the revocations this session committed (the gateway
    and every service refuse the tokens at once). Never raises for Redis."""
    await publish_committed(session, revocation_ttl())


async def _active_admin_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Locks every active admin row: concurrent demotions serialise on it (LAST_ADMIN)."""
    query = (
        select(User.id)
        .where(User.role == "ADMIN", User.is_active.is_(True), User.deleted_at.is_(None))
        .order_by(User.id)
        .with_for_update()
    )
    return list((await session.execute(query)).scalars())


async def _lock_target(session: AsyncSession, user_id: uuid.UUID) -> User:
    """Lock the user's row for a guarded change. When the user is an admin, every active admin
    row is locked first, in id order, so concurrent guarded changes never deadlock."""
    user = await get_user(session, user_id)
    if user.role == "ADMIN":
        await _active_admin_ids(session)
    return await get_user(session, user_id, lock=True)


async def _guard(
    session: AsyncSession, user: User, actor_id: uuid.UUID | None, action: str
) -> None:
    """An admin may not demote, deactivate or delete itself, nor the last active admin."""
    if actor_id is not None and user.id == actor_id:
        raise Conflict("CANNOT_MODIFY_SELF", f"You cannot {action} your own account")
    if user.role == "ADMIN" and user.is_active and user.deleted_at is None:
        admins = await _active_admin_ids(session)
        if len([a for a in admins if a != user.id]) == 0:
            raise Conflict("LAST_ADMIN", f"Cannot {action} the last active admin")


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    name: str,
    role: str,
    via: Literal["register", "admin"],
    actor_id: uuid.UUID | None = None,
    email_verified: bool = False,
) -> User:
    """Policy, argon2id, case-insensitive duplicate check (409 EMAIL_EXISTS), `user.created`.

    The hash is made before the first query, so a caller that has no transaction open (the
    services) holds no database connection while argon2 runs; a taken email costs the same
    hash, so the answer's timing does not tell either."""
    email = validate_email(email)
    name = validate_name(name)
    role = validate_role(role)
    password_hash = await new_password_hash(password, email, "password")
    if await _email_taken(session, email, None):
        raise Conflict("EMAIL_EXISTS", "Email is already registered")
    user = User(
        id=uuid.uuid4(),
        email=email,
        name=name,
        role=role,
        password_hash=password_hash,
        is_active=True,
        email_verified=email_verified,
        token_version=0,
    )
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError:
        # Lost a race with a concurrent registration of the same email.
        raise Conflict("EMAIL_EXISTS", "Email is already registered") from None
    await session.refresh(user)
    await emit(
        session,
        "user.created",
        {"user": _event_user(user), "via": via},
        actor_id=actor_id if actor_id is not None else user.id,
    )
    return user


async def update_user(
    session: AsyncSession,
    redis: Redis | None,
    user_id: uuid.UUID,
    *,
    actor_id: uuid.UUID | None,
    name: str | None = None,
    email: str | None = None,
) -> User:
    """Name and/or email (re-checked for duplicates); emits `user.updated` {user, changes}."""
    user = await get_user(session, user_id, lock=True)
    changes: dict[str, dict[str, Any]] = {}
    if name is not None:
        name = validate_name(name)
        if name != user.name:
            changes["name"] = {"old": user.name, "new": name}
            user.name = name
    if email is not None:
        email = validate_email(email)
        if email != user.email:
            if await _email_taken(session, email, user.id):
                raise Conflict("EMAIL_EXISTS", "Email is already registered")
            changes["email"] = {"old": user.email, "new": email}
            user.email = email
            user.email_verified = False
    if not changes:
        return user
    user.updated_at = datetime.now(UTC)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict("EMAIL_EXISTS", "Email is already registered") from None
    await session.refresh(user)
    await emit(
        session, "user.updated", {"user": _event_user(user), "changes": changes}, actor_id=actor_id
    )
    return user


async def change_role(
    session: AsyncSession,
    redis: Redis | None,
    user_id: uuid.UUID,
    new_role: str,
    *,
    actor_id: uuid.UUID | None,
) -> User:
    """Guards (self, last admin); revokes the user's access tokens (sessions live on, so the
    next refresh carries the new role); emits `user.role_changed`."""
    new_role = validate_role(new_role)
    user = await _lock_target(session, user_id)
    if new_role == user.role:
        return user
    if new_role != "ADMIN":
        await _guard(session, user, actor_id, "demote")
    elif actor_id is not None and user.id == actor_id:
        raise Conflict("CANNOT_MODIFY_SELF", "You cannot change your own role")
    old_role = user.role
    user.role = new_role
    user.updated_at = datetime.now(UTC)
    await revoke_user(session, redis, user, end_sessions=False, reason="role_changed")
    await session.refresh(user)
    await emit(
        session,
        "user.role_changed",
        {"userId": str(user.id), "oldRole": old_role, "newRole": new_role},
        actor_id=actor_id,
    )
    return user


async def set_active(
    session: AsyncSession,
    redis: Redis | None,
    user_id: uuid.UUID,
    is_active: bool,
    *,
    actor_id: uuid.UUID | None,
    reason: str | None = None,
) -> User:
    """Deactivation (guards) revokes all tokens and ends all sessions; emits
    `user.status_changed` {userId, isActive, reason}. No change → no event."""
    user = await _lock_target(session, user_id)
    reason = (reason or "").strip() or None
    if user.is_active == is_active:
        return user
    if not is_active:
        await _guard(session, user, actor_id, "deactivate")
    user.is_active = is_active
    user.updated_at = datetime.now(UTC)
    if not is_active:
        await revoke_user(session, redis, user, end_sessions=True, reason="deactivated")
    else:
        await session.flush()
    await session.refresh(user)
    await emit(
        session,
        "user.status_changed",
        {"userId": str(user.id), "isActive": is_active, "reason": reason},
        actor_id=actor_id,
    )
    return user


def anonymised_email(user_id: uuid.UUID) -> str:
    return f"deleted-{user_id.hex}@deleted.invalid"


async def delete_user(
    session: AsyncSession,
    redis: Redis | None,
    user_id: uuid.UUID,
    *,
    actor_id: uuid.UUID | None,
) -> None:
    """Soft delete: deactivate, anonymise the email (so it can be registered again), revoke
    all tokens and sessions; payments and the row itself are kept; emits `user.deleted`."""
    user = await _lock_target(session, user_id)
    await _guard(session, user, actor_id, "delete")
    user.is_active = False
    user.deleted_at = datetime.now(UTC)
    user.email = anonymised_email(user.id)
    user.email_verified = False
    user.updated_at = datetime.now(UTC)
    await revoke_user(session, redis, user, end_sessions=True, reason="deleted")
    await emit(session, "user.deleted", {"userId": str(user.id)}, actor_id=actor_id)


async def new_password_hash(password: str, email: str, field: str = "newPassword") -> str:
    """The policy (400 with one `details` entry per failed rule), then the argon2id hash.
    Call with no database transaction open: hashing takes ~20 ms of a core."""
    check_password_policy(password, email, field)
    return await hash_password(password)


async def set_password(
    session: AsyncSession,
    redis: Redis | None,
    user_id: uuid.UUID,
    password_hash: str,
    *,
    replaces: str,
) -> User:
    """Store a new hash (from `new_password_hash`) in place of `replaces`, the hash the caller
    verified the current password against; every token and session of the user is revoked.
    If the stored hash changed meanwhile (a concurrent change), the verified password is not
    the current one any more: 401 INVALID_CREDENTIALS. The caller emits
    `user.password_changed`, commits and publishes."""
    user = await get_user(session, user_id, lock=True)
    if user.password_hash != replaces or not user.is_active:
        raise Unauthorized("INVALID_CREDENTIALS", "Invalid email or password")
    user.password_hash = password_hash
    user.updated_at = datetime.now(UTC)
    await revoke_user(session, redis, user, end_sessions=True, reason="password_changed")
    return user


__all__ = [
    "AppError",
    "change_role",
    "create_user",
    "delete_user",
    "get_user",
    "new_password_hash",
    "publish_revocations",
    "revoke_user",
    "set_active",
    "set_password",
    "update_user",
    "user_json",
]
