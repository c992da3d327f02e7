"""The typed event catalogue of events.md: one pydantic model per (type, version).

`emit` validates `data` against the model of its type (unknown type → `UnknownEventType`, so a
typo fails the emitting test instead of silently publishing an event nobody consumes).
Consumers may call `parse(event)` to get the typed model back.

Rules shared by every model:
- keys are camelCase on the wire (`userId`); Python code may use either spelling;
- adding a field is compatible (`extra="allow"`); removing or changing one needs a new version
  registered here next to the old one;
- `data` never carries secrets: keys like `password`, `passwordHash`, `token`, `secret`,
  `accessToken`, `refreshToken` are rejected anywhere in the payload.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

from paysys.core.events.envelope import EventEnvelope

# Key names (compared case-insensitively, `_`/`-` ignored) that must never appear in event data.
FORBIDDEN_KEYS = frozenset(
    {
        "password",
        "passwordhash",
        "hash",
        "currentpassword",
        "newpassword",
        "token",
        "accesstoken",
        "refreshtoken",
        "secret",
        "clientsecret",
        "apikey",
    }
)


class UnknownEventType(ValueError):
    """An event type/version that is not in the catalogue."""


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def find_secret_keys(value: Any, path: str = "data") -> list[str]:
    """Paths of forbidden keys anywhere inside `value` (dicts and lists, recursively)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}"
            if isinstance(key, str) and _norm(key) in FORBIDDEN_KEYS:
                found.append(here)
            found.extend(find_secret_keys(item, here))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found.extend(find_secret_keys(item, f"{path}[{index}]"))
    return found


class EventData(BaseModel):
    """Base of every catalogue model."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, value: Any) -> Any:
        secrets = find_secret_keys(value)
        if secrets:
            raise ValueError(f"event data must not carry secrets: {', '.join(secrets)}")
        return value


class UserSnapshot(EventData):
    """The user JSON of api-contracts §3 (never a password hash)."""

    id: uuid.UUID
    email: str
    name: str | None = None
    role: str | None = None
    is_active: bool | None = None
    email_verified: bool | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class PaymentSnapshot(EventData):
    """The payment JSON of api-contracts §4 (the fields consumers rely on are required)."""

    id: uuid.UUID
    status: str
    amount: int | float | str
    currency: str
    sender_id: uuid.UUID | None = None
    recipient_id: uuid.UUID | None = None
    type: str | None = None


# --- user.* ---------------------------------------------------------------------------------
class UserCreatedV1(EventData):
    user: UserSnapshot
    via: Literal["register", "admin"]


class UserUpdatedV1(EventData):
    user: UserSnapshot
    changes: dict[str, Any]


class UserRoleChangedV1(EventData):
    user_id: uuid.UUID
    old_role: str
    new_role: str


class UserStatusChangedV1(EventData):
    user_id: uuid.UUID
    is_active: bool
    reason: str | None = None


class UserDeletedV1(EventData):
    user_id: uuid.UUID


class UserLoggedInV1(EventData):
    user_id: uuid.UUID
    ip: str | None = None
    user_agent: str | None = None


class UserLoggedOutV1(EventData):
    user_id: uuid.UUID
    all_sessions: bool = False
    # The ended session (absent when all of them ended); the gateway re-checks that user's
    # real-time connections on this event (api-contracts §9.6).
    session_id: uuid.UUID | None = None


class UserLoginFailedV1(EventData):
    email: str
    ip: str | None = None
    reason: str


class UserPasswordChangedV1(EventData):
    user_id: uuid.UUID


# --- payment.* ------------------------------------------------------------------------------
class PaymentEventV1(EventData):
    """`payment.created`, `payment.completed`, `payment.failed`, `payment.cancelled`."""

    payment: PaymentSnapshot


class PaymentStatusChangedV1(EventData):
    payment_id: uuid.UUID
    # The parties, so the gateway routes real-time messages without a database read
    # (api-contracts §9.4). Optional here: events written before they were added lack them.
    sender_id: uuid.UUID | None = None
    recipient_id: uuid.UUID | None = None
    old_status: str
    new_status: str
    reason: str | None = None
    # The real-time summary's figures (api-contracts §9.4), additive like the parties.
    amount: str | None = None
    currency: str | None = None
    type: str | None = None
    updated_at: datetime | None = None


# --- profile.* / config.* -------------------------------------------------------------------
class ProfileUpdatedV1(EventData):
    user_id: uuid.UUID
    changes: dict[str, Any]


class ConfigUpdatedV1(EventData):
    key: str
    old_value: Any = None
    new_value: Any = None


CATALOGUE: dict[tuple[str, int], type[EventData]] = {
    ("user.created", 1): UserCreatedV1,
    ("user.updated", 1): UserUpdatedV1,
    ("user.role_changed", 1): UserRoleChangedV1,
    ("user.status_changed", 1): UserStatusChangedV1,
    ("user.deleted", 1): UserDeletedV1,
    ("user.logged_in", 1): UserLoggedInV1,
    ("user.logged_out", 1): UserLoggedOutV1,
    ("user.login_failed", 1): UserLoginFailedV1,
    ("user.password_changed", 1): UserPasswordChangedV1,
    ("payment.created", 1): PaymentEventV1,
    ("payment.status_changed", 1): PaymentStatusChangedV1,
    ("payment.completed", 1): PaymentEventV1,
    ("payment.failed", 1): PaymentEventV1,
    ("payment.cancelled", 1): PaymentEventV1,
    ("profile.updated", 1): ProfileUpdatedV1,
    ("config.updated", 1): ConfigUpdatedV1,
}


def event_types() -> frozenset[str]:
    """Every known event type (any version)."""
    return frozenset(event_type for event_type, _ in CATALOGUE)


def model_for(event_type: str, version: int = 1) -> type[EventData]:
    try:
        return CATALOGUE[(event_type, version)]
    except KeyError:
        known = ", ".join(sorted(event_types()))
        raise UnknownEventType(
            f"unknown event type {event_type!r} version {version} (known: {known})"
        ) from None


def require_known_type(event_type: str) -> None:
    """Raise `UnknownEventType` unless some version of `event_type` is in the catalogue."""
    if event_type not in event_types():
        model_for(event_type, 1)  # raises with the list of known types


def validate_data(event_type: str, version: int, data: dict[str, Any]) -> EventData:
    """Validate `data` for `event_type`/`version`; raises `UnknownEventType` or a
    pydantic `ValidationError` (a subclass of ValueError)."""
    return model_for(event_type, version).model_validate(data)


def parse(event: EventEnvelope) -> EventData:
    """The typed model of a received event (consumers: `parse(event).user_id`)."""
    return validate_data(event.type, event.version, event.data)


def register(event_type: str, version: int, model: type[EventData]) -> None:
    """Add an event type/version to the catalogue (new versions live next to old ones)."""
    CATALOGUE[(event_type, version)] = model


__all__ = [
    "CATALOGUE",
    "EventData",
    "PaymentSnapshot",
    "UnknownEventType",
    "UserSnapshot",
    "event_types",
    "model_for",
    "parse",
    "register",
    "require_known_type",
    "validate_data",
]
