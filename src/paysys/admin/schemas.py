"""Request models and query parsing of the admin API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from paysys.core.passwords import PASSWORD_SCHEMA
from paysys.core.schemas import ApiModel, Email

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
