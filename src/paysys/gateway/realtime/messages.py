"""The wire format of api-contracts §9.2 and the mapping of events to messages (§9.3, §9.4).

Pure functions, no I/O: the hub, the SSE replay and `paysys events tail --as-user` all map an
event envelope (events.md) the same way. A message is `{type, id?, payload?, timestamp}` as one
JSON text; an event becomes at most two messages (`payment:*` for the parties and admins,
`admin:audit-created` for admins), each encoded once and sent unchanged to every connection
whose rooms match.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from paysys.core.events.audit import classify
from paysys.core.events.catalogue import event_types
from paysys.core.events.envelope import EventEnvelope
from paysys.core.timefmt import utcnow_iso

ADMIN_ROOM = "role:admin"
BROADCAST_ROOM = "broadcast"
AUDIT_CREATED = "admin:audit-created"
SYNC_RESET = "sync:reset"

PAYMENT_EVENTS = {
    "payment.created": "payment:created",
    "payment.status_changed": "payment:updated",
    "payment.completed": "payment:completed",
    "payment.failed": "payment:failed",
    "payment.cancelled": "payment:cancelled",
}
# What a client may receive as `eventType` (SSE `?types=` accepts these).
EVENT_TYPES = frozenset({*PAYMENT_EVENTS.values(), AUDIT_CREATED})

# Events after which the named user's open connections are re-checked against revocation.
REVOCATION_EVENTS = frozenset(
    {
        "user.logged_out",
        "user.password_changed",
        "user.role_changed",
        "user.status_changed",
        "user.deleted",
    }
)

_CATALOGUE = event_types()


def encode(
    type_: str,
    payload: dict[str, Any] | None = None,
    *,
    id: str | None = None,
    timestamp: str | None = None,
) -> str:
    """One §9.2 message as compact JSON text."""
    message: dict[str, Any] = {"type": type_}
    if id is not None:
        message["id"] = id
    if payload is not None:
        message["payload"] = payload
    message["timestamp"] = timestamp or utcnow_iso()
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def error_message(code: str, message: str, id: str | None = None) -> str:
    return encode("error", {"code": code, "message": message}, id=id)


def rooms_for(user_id: uuid.UUID | str, role: str) -> tuple[str, ...]:
    """The rooms a connection joins on open: its user, its role, and `broadcast`."""
    return (f"user:{user_id}", f"role:{role.lower()}", BROADCAST_ROOM)


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message produced by an event: where it goes and its encoded text."""

    event_type: str
    rooms: tuple[str, ...]
    text: str
    parties_known: bool = True  # False: a payment event without its parties (admins only)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def payment_summary(event_type: str, data: dict[str, Any], occurred_at: str) -> dict[str, Any]:
    """§9.4's payment summary: no description, metadata or email (clients refetch over REST)."""
    if event_type == "payment.status_changed":
        sender = _text(data.get("senderId"))
        summary: dict[str, Any] = {
            "paymentId": _text(data.get("paymentId")),
            "senderId": sender,
            "recipientId": _text(data.get("recipientId")),
            "userId": sender,
            "status": data.get("newStatus"),
            "previousStatus": data.get("oldStatus"),
            "reason": data.get("reason"),
        }
        source = dict(data)
        if data.get("newStatus") == "failed" and source.get("failureReason") is None:
            source["failureReason"] = data.get("reason")
    else:
        payment = data.get("payment")
        source = payment if isinstance(payment, dict) else {}
        sender = _text(source.get("senderId"))
        summary = {
            "paymentId": _text(source.get("id")),
            "senderId": sender,
            "recipientId": _text(source.get("recipientId")),
            "userId": sender,
            "status": source.get("status"),
        }
    summary["amount"] = _text(source.get("amount"))
    summary["currency"] = source.get("currency")
    summary["type"] = source.get("type")
    summary["failureReason"] = source.get("failureReason")
    summary["updatedAt"] = source.get("updatedAt") or occurred_at
    return summary


def audit_summary(envelope: EventEnvelope, occurred_at: str) -> dict[str, Any]:
    """`admin:audit-created` data: the audit row the admin consumer records for this event."""
    entry = classify(envelope)
    return {
        "eventId": str(envelope.id),
        "action": entry.action,
        "actorId": _text(entry.actor_id),
        "resourceType": entry.resource_type,
        "resourceId": entry.resource_id,
        "occurredAt": occurred_at,
    }


def parse_envelope(raw: dict[str, Any]) -> EventEnvelope | None:
    """The typed envelope, or None for something that is not one (never raises)."""
    try:
        return EventEnvelope.model_validate(raw)
    except (ValidationError, TypeError, ValueError):
        return None


def map_event(raw: dict[str, Any], audit: bool = True) -> list[Outbound]:
    """The messages an event envelope (as published on the stream) produces, in order
    (`audit=False`: without the `admin:audit-created` one, when no admin is listening)."""
    envelope = parse_envelope(raw)
    if envelope is None:
        return []
    event_id = str(envelope.id)
    occurred_at = str(raw.get("occurredAt") or utcnow_iso())
    produced: list[Outbound] = []
    client_type = PAYMENT_EVENTS.get(envelope.type)
    if client_type is not None:
        summary = payment_summary(envelope.type, envelope.data, occurred_at)
        parties = [summary["senderId"], summary["recipientId"]]
        rooms = tuple(f"user:{party}" for party in dict.fromkeys(parties) if party)
        text = encode(
            "event",
            {"eventType": client_type, "data": summary},
            id=event_id,
            timestamp=occurred_at,
        )
        # Without its sender (events written before `senderId` was added to
        # payment.status_changed), only admins may be told: never guess a party.
        known = summary["senderId"] is not None
        produced.append(
            Outbound(client_type, (*rooms, ADMIN_ROOM) if known else (ADMIN_ROOM,), text, known)
        )
    if audit and envelope.type in _CATALOGUE:
        text = encode(
            "event",
            {"eventType": AUDIT_CREATED, "data": audit_summary(envelope, occurred_at)},
            id=event_id,
            timestamp=occurred_at,
        )
        produced.append(Outbound(AUDIT_CREATED, (ADMIN_ROOM,), text))
    return produced


def revoked_user(raw: dict[str, Any]) -> str | None:
    """The user whose connections must be re-checked after this event, if any (§9.4)."""
    event_type = raw.get("type")
    if event_type not in REVOCATION_EVENTS:
        return None
    data = raw.get("data")
    if not isinstance(data, dict):
        return None
    if event_type == "user.status_changed" and data.get("isActive") is not False:
        return None
    user_id = data.get("userId")
    try:
        return str(uuid.UUID(str(user_id)))
    except ValueError:
        return None


def reset_message() -> str:
    """SSE `event: reset`: the resume point is gone, the client refetches."""
    return encode("event", {"eventType": SYNC_RESET, "data": {}})
