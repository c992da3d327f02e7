"""Request models and query parsing of the admin API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from paysys.core.passwords import PASSWORD_SCHEMA
from paysys.core.schemas import ApiModel, Email, PaginationOut, ResponseModel, success_envelope

Role = Literal["CUSTOMER", "VENDOR", "ADMIN"]


class CreateUserBody(ApiModel):
    email: Email
    password: str = Field(max_length=128, json_schema_extra=PASSWORD_SCHEMA)
    name: str = Field(min_length=1, max_length=100)
    role: Role


class UpdateUserBody(ApiModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    email: Email | None = None


class RoleBody(ApiModel):
    role: Role


class StatusBody(ApiModel):
    is_active: bool
    reason: str | None = Field(default=None, max_length=500)


# --- documented responses -----------------------------------------------------------------


class AuditActorOut(ResponseModel):
    id: uuid.UUID
    email: str
    name: str


class AuditLogOut(ResponseModel):
    """One audit row (api-contracts §5): the canonical fields, then the compatibility names
    the reference admin UI reads."""

    id: uuid.UUID
    action: str = Field(description="UPPER_SNAKE, one of GET /api/admin/audit-logs/actions")
    actor_id: uuid.UUID | None
    actor: AuditActorOut | None
    resource_type: str | None
    resource_id: str | None
    details: dict[str, Any]
    ip: str | None
    user_agent: str | None
    correlation_id: str | None
    event_id: uuid.UUID
    created_at: datetime
    user_id: uuid.UUID | None = Field(description="= actorId (compatibility)")
    user_name: str | None = Field(description="= actor.name, null without actor (compatibility)")
    user_email: str | None = Field(description="= actor.email, null without actor (compatibility)")
    ip_address: str | None = Field(description="= ip (compatibility)")
    timestamp: datetime = Field(description="= createdAt (compatibility)")


class AuditLogListOut(ResponseModel):
    audit_logs: list[AuditLogOut]
    data: list[AuditLogOut] = Field(description="= auditLogs (compatibility)")
    pagination: PaginationOut


AuditLogListResponse = success_envelope(AuditLogListOut, "AuditLogListResponse")
AuditActionsResponse = success_envelope(list[str], "AuditActionsResponse")
