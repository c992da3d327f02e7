"""Request models and query parsing of the admin API."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import Field

from paysys.core.errors import ValidationFailed
from paysys.core.schemas import ApiModel

Role = Literal["CUSTOMER", "VENDOR", "ADMIN"]
Order = Literal["asc", "desc"]
UserSort = Literal["createdAt", "email", "name", "role"]
AuditSort = Literal["createdAt", "action"]

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_bound(field: str, value: str | None, *, end: bool) -> datetime | None:
    """ISO-8601 date-time or plain date → an aware UTC instant.

    Start bounds are inclusive. End bounds are returned **exclusive**: a plain end date covers
    that whole UTC day (→ the next midnight), a date-time end covers its instant (→ +1 µs)."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if _DATE_ONLY.match(text):
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            return moment + timedelta(days=1) if end else moment
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationFailed(field, "must be an ISO-8601 date or date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    return parsed + timedelta(microseconds=1) if end else parsed


def parse_bool(field: str, value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    lowered = value.strip().lower()
    if lowered in {"true", "1"}:
        return True
    if lowered in {"false", "0"}:
        return False
    raise ValidationFailed(field, "must be true or false")


class CreateUserBody(ApiModel):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(max_length=128)
    name: str = Field(min_length=1, max_length=100)
    role: Role


class UpdateUserBody(ApiModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    email: str | None = Field(default=None, min_length=3, max_length=254)


class RoleBody(ApiModel):
    role: Role


class StatusBody(ApiModel):
    is_active: bool
    reason: str | None = Field(default=None, max_length=500)


class ConfigValueBody(ApiModel):
    value: Any = Field(...)


def config_map(body: Any) -> dict[str, Any]:
    """`PUT /api/admin/config` body: an object of `{key: value}` (several keys at once)."""
    if not isinstance(body, dict):
        raise ValidationFailed("body", "must be an object of configuration keys and values")
    return body
