"""The audit log: built only from events (events.md), one row per event, never duplicated.

`record_audit(session, event)` is the admin consumer's handler for every event type: it runs in
the consumer's transaction and inserts one row keyed by the event id (`ON CONFLICT DO NOTHING`),
so a redelivered event changes nothing even without the consumer's own bookkeeping.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.admin.models import AuditLog
from paysys.core.events.envelope import EventEnvelope
from paysys.core.timefmt import iso_or_none
from paysys.users.models import User

# The UPPER_SNAKE actions of api-contracts §5, in the contract's order.
ACTIONS: tuple[str, ...] = (
    "USER_REGISTERED",
    "USER_CREATED",
    "USER_UPDATED",
    "USER_ROLE_CHANGED",
    "USER_STATUS_CHANGED",
    "USER_DELETED",
    "USER_LOGIN",
    "USER_LOGIN_FAILED",
    "USER_LOGOUT",
    "USER_PASSWORD_CHANGED",
    "PAYMENT_CREATED",
    "PAYMENT_STATUS_CHANGED",
    "PAYMENT_COMPLETED",
    "PAYMENT_FAILED",
    "PAYMENT_CANCELLED",
    "PROFILE_UPDATED",
    "SYSTEM_CONFIG_CHANGED",
)

RESOURCE_TYPES: tuple[str, ...] = ("user", "payment", "profile", "config")

# event type → (action, resource type, data key holding the resource id)
_MAPPING: dict[str, tuple[str, str, str | None]] = {
    "user.updated": ("USER_UPDATED", "user", "user.id"),
    "user.role_changed": ("USER_ROLE_CHANGED", "user", "userId"),
    "user.status_changed": ("USER_STATUS_CHANGED", "user", "userId"),
    "user.deleted": ("USER_DELETED", "user", "userId"),
    "user.logged_in": ("USER_LOGIN", "user", "userId"),
    "user.logged_out": ("USER_LOGOUT", "user", "userId"),
    "user.login_failed": ("USER_LOGIN_FAILED", "user", None),
    "user.password_changed": ("USER_PASSWORD_CHANGED", "user", "userId"),
    "payment.created": ("PAYMENT_CREATED", "payment", "payment.id"),
    "payment.status_changed": ("PAYMENT_STATUS_CHANGED", "payment", "paymentId"),
    "payment.completed": ("PAYMENT_COMPLETED", "payment", "payment.id"),
    "payment.failed": ("PAYMENT_FAILED", "payment", "payment.id"),
    "payment.cancelled": ("PAYMENT_CANCELLED", "payment", "payment.id"),
    "profile.updated": ("PROFILE_UPDATED", "profile", "userId"),
    "config.updated": ("SYSTEM_CONFIG_CHANGED", "config", "key"),
}

# Events a user causes about themselves: without an explicit actor, the user is the actor.
_SELF_ACTED = {
    "user.logged_in",
    "user.logged_out",
    "user.password_changed",
    "profile.updated",
}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    action: str
    resource_type: str | None
    resource_id: str | None
    actor_id: uuid.UUID | None


def _dig(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _uuid(value: Any) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def classify(event: EventEnvelope) -> AuditEntry:
    """The audit action, resource and actor of one event."""
    data = event.data
    actor = _uuid(event.actor_id)
    if event.type == "user.created":
        via = data.get("via")
        user_id = _dig(data, "user.id")
        action = "USER_CREATED" if via == "admin" else "USER_REGISTERED"
        if actor is None and via != "admin":
            actor = _uuid(user_id)
        return AuditEntry(action, "user", str(user_id) if user_id else None, actor)
    mapped = _MAPPING.get(event.type)
    if mapped is None:
        # An event type newer than this consumer: still one row, nothing lost.
        action = event.type.replace(".", "_").replace("-", "_").upper()
        return AuditEntry(action, event.type.split(".", 1)[0] or None, None, actor)
    action, resource_type, id_path = mapped
    resource = _dig(data, id_path) if id_path else None
    if actor is None and event.type in _SELF_ACTED:
        actor = _uuid(resource)
    return AuditEntry(action, resource_type, str(resource) if resource else None, actor)


def _client_info(event: EventEnvelope) -> tuple[str | None, str | None]:
    """ip / user agent: from the envelope when the hub carries them, else from the data."""
    extra = event.model_extra or {}
    ip = getattr(event, "ip", None) or extra.get("ip") or event.data.get("ip")
    agent = (
        getattr(event, "user_agent", None)
        or extra.get("userAgent")
        or event.data.get("userAgent")
        or event.data.get("user_agent")
    )
    return (str(ip)[:255] if ip else None), (str(agent)[:1000] if agent else None)


async def record_audit(session: AsyncSession, event: EventEnvelope) -> None:
    """Insert the event's audit row (nothing when it was already recorded: redelivery)."""
    entry = classify(event)
    ip, agent = _client_info(event)
    occurred = event.occurred_at
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    statement = (
        insert(AuditLog)
        .values(
            id=uuid.uuid4(),
            event_id=event.id,
            event_type=event.type,
            action=entry.action,
            actor_id=entry.actor_id,
            resource_type=entry.resource_type,
            resource_id=entry.resource_id,
            details=event.data,
            ip=ip,
            user_agent=agent,
            correlation_id=event.correlation_id,
            created_at=occurred,
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
    )
    await session.execute(statement)


# --- reads ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditFilters:
    action: str | None = None
    actor_id: uuid.UUID | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None  # exclusive


def _filtered(statement: Any, filters: AuditFilters) -> Any:
    if filters.action:
        statement = statement.where(AuditLog.action == filters.action)
    if filters.actor_id:
        statement = statement.where(AuditLog.actor_id == filters.actor_id)
    if filters.resource_type:
        statement = statement.where(AuditLog.resource_type == filters.resource_type)
    if filters.resource_id:
        statement = statement.where(AuditLog.resource_id == filters.resource_id)
    if filters.start:
        statement = statement.where(AuditLog.created_at >= filters.start)
    if filters.end:
        statement = statement.where(AuditLog.created_at < filters.end)
    return statement


def page_statement(
    filters: AuditFilters, *, page: int, limit: int, sort: str = "createdAt", order: str = "desc"
) -> Any:
    """One page of audit rows with the actor's email and name (ties broken by id)."""
    column = {"createdAt": AuditLog.created_at, "action": AuditLog.action}[sort]
    direction = (lambda c: c.desc()) if order == "desc" else (lambda c: c.asc())
    statement = _filtered(
        select(AuditLog, User.email, User.name).outerjoin(User, User.id == AuditLog.actor_id),
        filters,
    )
    return (
        statement.order_by(direction(column), direction(AuditLog.id))
        .offset((page - 1) * limit)
        .limit(limit)
    )


async def list_audit_logs(
    session: AsyncSession,
    filters: AuditFilters,
    *,
    page: int,
    limit: int,
    sort: str = "createdAt",
    order: str = "desc",
) -> tuple[list[dict[str, Any]], int]:
    total = await session.scalar(_filtered(select(func.count()).select_from(AuditLog), filters))
    statement = page_statement(filters, page=page, limit=limit, sort=sort, order=order)
    rows = (await session.execute(statement)).all()
    return [audit_json(row[0], row[1], row[2]) for row in rows], int(total or 0)


def audit_json(log: AuditLog, email: str | None, name: str | None) -> dict[str, Any]:
    actor = None
    if log.actor_id is not None and email is not None:
        actor = {"id": str(log.actor_id), "email": email, "name": name}
    return {
        "id": str(log.id),
        "action": log.action,
        "actorId": str(log.actor_id) if log.actor_id else None,
        "actor": actor,
        "resourceType": log.resource_type,
        "resourceId": log.resource_id,
        "details": log.details,
        "ip": log.ip,
        "userAgent": log.user_agent,
        "correlationId": log.correlation_id,
        "eventId": str(log.event_id),
        "createdAt": iso_or_none(log.created_at),
    }


async def known_actions(session: AsyncSession) -> list[str]:
    """The contract's actions, then any other action already recorded (newer event types)."""
    recorded = (await session.scalars(select(AuditLog.action).distinct())).all()
    extra = sorted(set(recorded) - set(ACTIONS))
    return [*ACTIONS, *extra]
