"""The audit log: built only from events (events.md), one row per event, never duplicated.

`record_audit(session, event)` is the admin consumer's handler for every event type: it runs in
the consumer's transaction and inserts one row keyed by the event id (`ON CONFLICT DO NOTHING`),
so a redelivered event changes nothing even without the consumer's own bookkeeping. The
mapping of an event to its action, resource and actor is `paysys.core.events.audit` (the
gateway's real-time `admin:audit-created` messages use the same one).
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
from paysys.core.events.audit import ACTIONS, RESOURCE_TYPES, AuditEntry, classify
from paysys.core.events.envelope import EventEnvelope
from paysys.core.timefmt import iso_or_none
from paysys.users.models import User


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
    actor_id = str(log.actor_id) if log.actor_id else None
    created_at = iso_or_none(log.created_at)
    return {
        "id": str(log.id),
        "action": log.action,
        "actorId": actor_id,
        "actor": actor,
        "resourceType": log.resource_type,
        "resourceId": log.resource_id,
        "details": log.details,
        "ip": log.ip,
        "userAgent": log.user_agent,
        "correlationId": log.correlation_id,
        "eventId": str(log.event_id),
        "createdAt": created_at,
        # api-contracts §5 compatibility: the names the reference admin UI reads.
        "userId": actor_id,
        "userName": actor["name"] if actor else None,
        "userEmail": actor["email"] if actor else None,
        "ipAddress": log.ip,
        "timestamp": created_at,
    }


async def known_actions(session: AsyncSession) -> list[str]:
    """The contract's actions, then any other action already recorded (newer event types)."""
    recorded = (await session.scalars(select(AuditLog.action).distinct())).all()
    extra = sorted(set(recorded) - set(ACTIONS))
    return [*ACTIONS, *extra]


__all__ = [
    "ACTIONS",
    "RESOURCE_TYPES",
    "AuditEntry",
    "AuditFilters",
    "audit_json",
    "classify",
    "known_actions",
    "list_audit_logs",
    "page_statement",
    "record_audit",
]
