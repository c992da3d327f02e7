"""Admin use cases; each write owns its transaction and commits here.

User writes call `paysys.users.accounts`, the code path auth uses (policy, hashing, revocation,
events in the outbox of the same transaction). Configuration changes follow the rules in
`config_entries`. Reads: users (the profile from the profile service's own code, payment counts
from the payments table), the audit log, stats and the system's health.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from sqlalchemy import func, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.admin import audit, config_entries
from paysys.admin.schemas import CreateUserBody
from paysys.admin.stats import system_stats
from paysys.admin.system_health import system_health
from paysys.core.config import Settings
from paysys.core.errors import AppError, NotFound
from paysys.core.logging import get_logger
from paysys.core.runtime import Runtime
from paysys.core.timefmt import iso_or_none
from paysys.payments.models import Payment
from paysys.profile.service import find_profile
from paysys.users import accounts
from paysys.users.models import User

log = get_logger("paysys.admin.service")
T = TypeVar("T")

# --- transactions -------------------------------------------------------------------------------

# PostgreSQL aborts one of two transactions that lock the same admin rows in opposite order
# (e.g. two admins demoting each other at once): deadlock_detected / serialization_failure.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
ATTEMPTS = 3


async def commit_with_retry(session: AsyncSession, operation: Callable[[], Awaitable[T]]) -> T:
    """Run a write and commit; a deadlocked attempt is rolled back and redone (the retry re-reads
    everything, so guards see the winner's committed state). At most `ATTEMPTS` tries. After
    the commit, the revocations it made (role, status, deletion) are published to Redis."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            result = await operation()
            await session.commit()
            await accounts.publish_revocations(session)
            return result
        except DBAPIError as exc:
            await session.rollback()
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if sqlstate not in RETRYABLE_SQLSTATES or attempt == ATTEMPTS:
                raise
            log.info("retrying admin write after a lock conflict", attempt=attempt)
    raise AssertionError("unreachable")  # pragma: no cover


# --- users (reads) ------------------------------------------------------------------------------


def user_json(user: User) -> dict[str, Any]:
    """§3 user JSON (+ `deletedAt`, useful with `includeDeleted=true`)."""
    return {**accounts.user_json(user), "deletedAt": iso_or_none(user.deleted_at)}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class UserFilters:
    role: str | None = None
    is_active: bool | None = None
    search: str | None = None
    include_deleted: bool = False


def _filtered(statement: Any, filters: UserFilters) -> Any:
    if not filters.include_deleted:
        statement = statement.where(User.deleted_at.is_(None))
    if filters.role:
        statement = statement.where(User.role == filters.role)
    if filters.is_active is not None:
        statement = statement.where(User.is_active.is_(filters.is_active))
    if filters.search:
        pattern = f"%{_escape_like(filters.search)}%"
        statement = statement.where(
            or_(User.email.ilike(pattern, escape="\\"), User.name.ilike(pattern, escape="\\"))
        )
    return statement


SORT_COLUMNS = {
    "createdAt": User.created_at,
    "email": User.email,
    "name": User.name,
    "role": User.role,
}


async def list_users(
    session: AsyncSession,
    filters: UserFilters,
    *,
    page: int,
    limit: int,
    sort: str,
    order: str,
) -> tuple[list[dict[str, Any]], int]:
    """One page of users and the total; ties broken by id, so pages never overlap."""
    total = await session.scalar(_filtered(select(func.count()).select_from(User), filters))
    column: Any = SORT_COLUMNS[sort]
    keys = [column.desc(), User.id.desc()] if order == "desc" else [column.asc(), User.id.asc()]
    statement = (
        _filtered(select(User), filters).order_by(*keys).offset((page - 1) * limit).limit(limit)
    )
    users = (await session.scalars(statement)).all()
    return [user_json(user) for user in users], int(total or 0)


async def _payment_counts(session: AsyncSession, user_id: uuid.UUID) -> dict[str, int]:
    """`{sentPayments, receivedPayments}` over the payments table (a read of payments' model)."""
    sent = await session.scalar(
        select(func.count()).select_from(Payment).where(Payment.sender_id == user_id)
    )
    received = await session.scalar(
        select(func.count()).select_from(Payment).where(Payment.recipient_id == user_id)
    )
    return {"sentPayments": int(sent or 0), "receivedPayments": int(received or 0)}


async def user_detail(
    session: AsyncSession, user_id: uuid.UUID, *, include_deleted: bool = False
) -> dict[str, Any]:
    """A user with the profile (None until the profile service made it) and payment counts; a
    soft-deleted one only when asked for (after DELETE the resource is gone, RFC 9110)."""
    user = await session.get(User, user_id)
    if user is None or (user.deleted_at is not None and not include_deleted):
        raise NotFound("USER_NOT_FOUND", "User not found")
    data = user_json(user)
    data["profile"] = await find_profile(session, user.id)
    data["stats"] = await _payment_counts(session, user.id)
    return data


# --- users (writes) -----------------------------------------------------------------------------


async def create_user(
    session: AsyncSession, body: CreateUserBody, *, actor_id: uuid.UUID
) -> dict[str, Any]:
    """Same policy, hashing and `user.created` as registration (`via` "admin")."""
    user = await commit_with_retry(
        session,
        lambda: accounts.create_user(
            session,
            email=body.email,
            password=body.password,
            name=body.name,
            role=body.role,
            via="admin",
            actor_id=actor_id,
        ),
    )
    return user_json(user)


async def update_user(
    session: AsyncSession,
    redis: Redis | None,
    user_id: uuid.UUID,
    *,
    actor_id: uuid.UUID,
    name: str | None,
    email: str | None,
) -> dict[str, Any]:
    user = await commit_with_retry(
        session,
        lambda: accounts.update_user(
            session, redis, user_id, actor_id=actor_id, name=name, email=email
        ),
    )
    return user_json(user)


async def change_role(
    session: AsyncSession,
    redis: Redis | None,
    user_id: uuid.UUID,
    role: str,
    *,
    actor_id: uuid.UUID,
) -> dict[str, Any]:
    user = await commit_with_retry(
        session, lambda: accounts.change_role(session, redis, user_id, role, actor_id=actor_id)
    )
    return user_json(user)


async def set_status(
    session: AsyncSession,
    redis: Redis | None,
    user_id: uuid.UUID,
    is_active: bool,
    *,
    actor_id: uuid.UUID,
    reason: str | None,
) -> dict[str, Any]:
    user = await commit_with_retry(
        session,
        lambda: accounts.set_active(
            session, redis, user_id, is_active, actor_id=actor_id, reason=reason
        ),
    )
    return user_json(user)


async def delete_user(
    session: AsyncSession, redis: Redis | None, user_id: uuid.UUID, *, actor_id: uuid.UUID
) -> None:
    await commit_with_retry(
        session, lambda: accounts.delete_user(session, redis, user_id, actor_id=actor_id)
    )


# --- configuration ------------------------------------------------------------------------------


async def config_list(session: AsyncSession) -> list[dict[str, Any]]:
    return await config_entries.list_entries(session)


async def config_entry(session: AsyncSession, key: str) -> dict[str, Any]:
    return await config_entries.get_entry(session, key)


def require_config_key(key: str) -> None:
    """404 CONFIG_KEY_NOT_FOUND for an unknown key (checked before the body is read)."""
    config_entries.require_key(key)


async def update_config(
    session: AsyncSession, changes: dict[str, Any], actor_id: uuid.UUID
) -> list[dict[str, Any]]:
    """All or nothing; returns the entries of the keys named in `changes`, in request order."""
    try:
        await config_entries.apply(session, changes, actor_id)
    except AppError:
        await session.rollback()  # releases the config lock before the error is answered
        raise
    await session.commit()
    return await config_entries.entries_of(session, list(changes))


# --- audit log, stats, health -------------------------------------------------------------------


async def audit_actions(session: AsyncSession) -> list[str]:
    return await audit.known_actions(session)


async def list_audit_logs(
    session: AsyncSession,
    filters: audit.AuditFilters,
    *,
    page: int,
    limit: int,
    sort: str,
    order: str,
) -> tuple[list[dict[str, Any]], int]:
    return await audit.list_audit_logs(
        session, filters, page=page, limit=limit, sort=sort, order=order
    )


async def stats(session: AsyncSession, days: int) -> dict[str, Any]:
    return await system_stats(session, days)


async def health(runtime: Runtime, settings: Settings, started_at: float) -> dict[str, Any]:
    return await system_health(runtime, settings, started_at)
