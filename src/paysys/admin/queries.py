"""The query models of the admin lists and stats (`core.querymodel`: one model per endpoint
validates the query string and documents its parameters; unknown or repeated parameters, and
anything the schema refuses, → 400 `VALIDATION_ERROR`).

Rules that need the database (an audit `action` must be one of `/audit-logs/actions`) are
checked by the endpoint after parsing and named in the parameter's description.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import Field

from paysys.core.errors import ValidationFailed
from paysys.core.events.audit import RESOURCE_TYPES
from paysys.core.querydates import DATE_DESCRIPTION, QUERY_DATE, DateRange, parse_range
from paysys.core.querymodel import Integer, Matching, Omitted, OneOf, QueryModel, Text

ROLES = ("CUSTOMER", "VENDOR", "ADMIN")
_BOOLEAN = OneOf("true", "false", "1", "0")
_UUID = Matching(
    r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$",
    "must be a UUID",
)
_RESOURCE_TYPE_RULE = "must be one of " + ", ".join(RESOURCE_TYPES)


def _any_case(*words: str) -> str:
    """A pattern matching `words` in any letter case, in the ASCII classes JSON Schema's
    regular expressions share with Python's (no inline flags)."""
    return "^(" + "|".join("".join(f"[{c.upper()}{c.lower()}]" for c in w) for w in words) + ")$"


class UserListQuery(QueryModel):
    """The query of GET /api/admin/users."""

    page: Annotated[int, Integer(1, 1_000_000)] = Field(1, description="page number")
    limit: Annotated[int, Integer(1, 100)] = Field(10, description="page size")
    sort: Annotated[str, OneOf("createdAt", "email", "name", "role")] = Field(
        "createdAt", description="sort key (ties broken by id)"
    )
    order: Annotated[str, OneOf("asc", "desc")] = Field("desc", description="sort order")
    role: Annotated[str, OneOf(*ROLES)] | Omitted = Field(None, description="only this role")
    is_active: Annotated[str, _BOOLEAN] | Omitted = Field(
        None, alias="isActive", description="only active (true, 1) or inactive (false, 0) users"
    )
    search: Annotated[str, Text(254)] | Omitted = Field(
        None, description="case-insensitive substring of the name or email (taken literally)"
    )
    include_deleted: Annotated[str, _BOOLEAN] | Omitted = Field(
        None, alias="includeDeleted", description="also soft-deleted users (true, 1)"
    )

    @property
    def active(self) -> bool | None:
        return None if self.is_active is None else self.is_active in ("true", "1")

    @property
    def with_deleted(self) -> bool:
        return self.include_deleted in ("true", "1")


class AuditLogQuery(QueryModel):
    """The query of GET /api/admin/audit-logs."""

    page: Annotated[int, Integer(1, 1_000_000)] = Field(1, description="page number")
    limit: Annotated[int, Integer(1, 100)] = Field(10, description="page size")
    sort: Annotated[str, OneOf("createdAt", "action")] = Field(
        "createdAt", description="sort key (ties broken by id)"
    )
    order: Annotated[str, OneOf("asc", "desc")] = Field("desc", description="sort order")
    action: (
        Annotated[str, Matching(r"^[A-Za-z][A-Za-z0-9_]{0,63}$", "must be an audit action")]
        | Omitted
    ) = Field(
        None,
        description="an action of GET /api/admin/audit-logs/actions, any letter case "
        "(another one → 400)",
    )
    actor_id: Annotated[str, _UUID] | Omitted = Field(
        None, alias="actorId", description="the acting user's id"
    )
    user_id: Annotated[str, _UUID] | Omitted = Field(
        None,
        alias="userId",
        description="alias of actorId (the reference admin UI's name); with actorId, the same id",
    )
    resource_type: (
        Annotated[str, Matching(_any_case(*RESOURCE_TYPES), _RESOURCE_TYPE_RULE)] | Omitted
    ) = Field(
        None,
        alias="resourceType",
        description="one of " + ", ".join(RESOURCE_TYPES) + ", any letter case",
    )
    resource_id: Annotated[str, Text(255)] | Omitted = Field(
        None, alias="resourceId", description="user or payment id, or config key"
    )
    start_date: Annotated[str, QUERY_DATE] | Omitted = Field(
        None, alias="startDate", description="from this moment; " + DATE_DESCRIPTION
    )
    end_date: Annotated[str, QUERY_DATE] | Omitted = Field(
        None,
        alias="endDate",
        description="up to this moment (a date: its whole UTC day); " + DATE_DESCRIPTION,
    )

    def actor(self) -> uuid.UUID | None:
        """`actorId`, or its alias `userId` (api-contracts §5); both only with the same id."""
        ids = {uuid.UUID(value) for value in (self.actor_id, self.user_id) if value is not None}
        if len(ids) > 1:
            raise ValidationFailed("userId", "must equal actorId (it is its alias)")
        return next(iter(ids), None)

    def dates(self) -> DateRange:
        return parse_range(self.start_date, self.end_date)


class UserDetailQuery(QueryModel):
    """The query of GET /api/admin/users/{id}: a deleted user is gone (404, as after any
    DELETE) unless asked for, like the list's `includeDeleted`."""

    include_deleted: Annotated[str, _BOOLEAN] | Omitted = Field(
        None, alias="includeDeleted", description="also a soft-deleted user (true, 1)"
    )

    @property
    def with_deleted(self) -> bool:
        return self.include_deleted in ("true", "1")


class StatsQuery(QueryModel):
    """The query of GET /api/admin/stats."""

    days: Annotated[int, Integer(1, 365)] = Field(30, description="days of the daily series")
