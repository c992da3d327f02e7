"""What an event means in the audit log: its UPPER_SNAKE action (api-contracts §5), resource
and actor (events.md). Pure, no database: the admin consumer writes one audit row per event
with it (`paysys.admin.audit`), and the gateway's real-time `admin:audit-created` messages
(api-contracts §9.4) carry the same classification."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from paysys.core.events.envelope import EventEnvelope

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
