"""Request models and query parsing of the admin API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from paysys.core.passwords import PASSWORD_SCHEMA
from paysys.core.schemas import EMAIL_SCHEMA, ApiModel

EMAIL_DOC: dict[str, Any] = {
    "pattern": EMAIL_SCHEMA["pattern"],
    "description": EMAIL_SCHEMA["description"],
}

Role = Literal["CUSTOMER", "VENDOR", "ADMIN"]


class CreateUserBody(ApiModel):
    email: str = Field(min_length=3, max_length=254, json_schema_extra=EMAIL_DOC)
    password: str = Field(max_length=128, json_schema_extra=PASSWORD_SCHEMA)
    name: str = Field(min_length=1, max_length=100)
    role: Role


class UpdateUserBody(ApiModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    email: str | None = Field(
        default=None, min_length=3, max_length=254, json_schema_extra=EMAIL_DOC
    )


class RoleBody(ApiModel):
    role: Role


class StatusBody(ApiModel):
    is_active: bool
    reason: str | None = Field(default=None, max_length=500)
