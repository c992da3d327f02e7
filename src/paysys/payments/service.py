"""Payments rules: create (idempotent), read, list, status changes, reports.

Each function owns its database transaction and writes its outbox events in it. The SQL lives
in `paysys.payments.queries` (plain SQL through asyncpg, see there why); this module decides
what may happen and in what order.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from paysys.core.errors import AppError, Conflict, Forbidden, NotFound, ValidationFailed
from paysys.core.events.outbox import OutboxRows
from paysys.core.money import format_minor
from paysys.core.querydates import DateRange
from paysys.core.sysconfig import Limits
from paysys.core.timefmt import iso_z
from paysys.core.tokens import Principal
from paysys.payments import queries, states
from paysys.payments.db import Conn, dumps
from paysys.payments.queries import payment_json
from paysys.payments.schemas import CreateInput, ListQuery

IDEMPOTENCY_TTL = timedelta(hours=24)


def can_see(principal: Principal, row: Any) -> bool:
    return (
        principal.is_admin
        or row["sender_id"] == principal.id
        or row["recipient_id"] == principal.id
    )


def _not_found() -> NotFound:
    return NotFound("PAYMENT_NOT_FOUND", "Payment not found")


# --- create -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Created:
    status: int
    body: bytes
    replayed: bool


def fingerprint(parsed_body: Any) -> str:
    """The request as the idempotency record remembers it: canonical JSON of the body
    (key order and whitespace do not matter; values and their spelling do)."""

    def default(value: Any) -> str:
        return f"#num:{value.text}"  # RawNumber: its literal text

    canonical = json.dumps(parsed_body, sort_keys=True, separators=(",", ":"), default=default)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_parties(principal: Principal, field: str, sender: Any, recipient: Any) -> None:
    """Rows with id, is_active, deleted (None when absent) → the create rules of §4."""
    if sender is None or not sender["is_active"] or sender["deleted"]:
        raise AppError("TOKEN_INVALID", "Token is invalid")
    if recipient is None or recipient["deleted"]:
        raise NotFound("RECIPIENT_NOT_FOUND", "Recipient not found")
    if recipient["id"] == principal.id:
        raise ValidationFailed(field, "must not be yourself")
    if not recipient["is_active"]:
        raise ValidationFailed(field, "recipient account is deactivated")


async def create_payment(
    conn: Conn,
    principal: Principal,
    data: CreateInput,
    *,
    idempotency_key: str | None,
    request_fingerprint: str,
    wait_ms: int,
    limits: Limits | None = None,
) -> Created:
    """Create a payment; with an Idempotency-Key the key is claimed in the same transaction
    as the payment, its first history row and its `payment.created` event."""
    if limits is not None:
        check_limits(data, limits)
    if idempotency_key is None:
        _, body = await _insert_payment(conn, principal, data)
        return Created(201, body, False)

    async with conn.transaction():
        # Wait (bounded) for a concurrent request holding the same key: then replay its
        # result. Still running after `wait_ms` → 409 IDEMPOTENCY_IN_PROGRESS.
        await queries.set_lock_timeout(conn, wait_ms)
        try:
            claimed = await queries.claim_key(
                conn,
                principal.id,
                idempotency_key,
                request_fingerprint,
                datetime.now(UTC) + IDEMPOTENCY_TTL,
            )
        except asyncpg.LockNotAvailableError:
            raise Conflict(
                "IDEMPOTENCY_IN_PROGRESS",
                "A request with this Idempotency-Key is still being processed",
            ) from None
        if not claimed:
            stored = await queries.read_key(conn, principal.id, idempotency_key)
            assert stored is not None
            if stored["fingerprint"] != request_fingerprint:
                raise AppError(
                    "IDEMPOTENCY_KEY_REUSED",
                    "This Idempotency-Key was already used with a different request body",
                )
            if stored["state"] != "completed":  # pragma: no cover - never committed so
                raise Conflict(
                    "IDEMPOTENCY_IN_PROGRESS",
                    "A request with this Idempotency-Key is still being processed",
                )
            return Created(stored["response_status"], stored["response_body"].encode(), True)
        payment_id, body = await _insert_payment(conn, principal, data)
        await queries.complete_key(conn, principal.id, idempotency_key, body.decode(), payment_id)
        return Created(201, body, False)


async def _insert_payment(
    conn: Conn, principal: Principal, data: CreateInput
) -> tuple[uuid.UUID, bytes]:
    """Insert the payment (history row, `payment.created`) → its id and the response body.
    One statement (queries.create_payment): it also finds the parties, and inserts nothing
    when they break a rule, which is then told from the users it returns."""
    now = datetime.now(UTC)
    created = {  # the new payment (queries.CREATED_COLUMNS)
        "id": uuid.uuid4(),
        "sender_id": principal.id,
        "amount": data.amount,
        "currency": data.currency,
        "status": "pending",
        "type": data.type,
        "description": data.description,
        "metadata": data.metadata,
        "created_at": now,
        "updated_at": now,
    }
    # The event is built before the parties are known; the statement fills them in.
    draft = payment_json(queries.new_payment_row(created, s_email="", s_name=""))
    row = await queries.create_payment(
        conn,
        created,
        recipient_id=data.recipient_uuid,
        recipient_email=data.recipient_email,
        history_id=uuid.uuid4(),
        events=OutboxRows.of([("payment.created", {"payment": draft})], actor_id=principal.id),
    )
    assert row is not None
    sender = None
    if row["s_id"] is not None:
        sender = {"id": row["s_id"], "is_active": row["s_active"], "deleted": row["s_deleted"]}
    recipient = None
    if row["r_id"] is not None:
        recipient = {"id": row["r_id"], "is_active": row["r_active"], "deleted": row["r_deleted"]}
    field = "recipientId" if data.recipient_id is not None else "recipientEmail"
    _check_parties(principal, field, sender, recipient)
    assert row["inserted"] == 1
    payment = payment_json(
        queries.new_payment_row(
            created,
            recipient_id=row["r_id"],
            s_email=row["s_email"],
            s_name=row["s_name"],
            r_email=row["r_email"],
            r_name=row["r_name"],
        )
    )
    return created["id"], dumps({"success": True, "data": payment}).encode()


def check_limits(data: CreateInput, limits: Limits) -> None:
    """The config limits of the payment's currency (minor units; a currency without any has
    none beyond the amount rules already applied)."""
    currency = data.currency
    low, high = limits.get(currency, (None, None))
    if low is not None and data.amount < low:
        bound = format_minor(low, currency)
        raise ValidationFailed("amount", f"must be at least {bound} {currency}")
    if high is not None and data.amount > high:
        bound = format_minor(high, currency)
        raise ValidationFailed("amount", f"must not exceed {bound} {currency}")


# --- read ---------------------------------------------------------------------------------


async def get_payment(conn: Conn, principal: Principal, payment_id: uuid.UUID) -> dict[str, Any]:
    row = await queries.get_payment(conn, payment_id)
    if row is None or not can_see(principal, row):
        raise _not_found()
    payment = payment_json(row)
    payment["transactions"] = queries.history_json(row)
    return payment


async def list_payments(
    conn: Conn, query: ListQuery, viewer: Principal | None
) -> tuple[list[dict[str, Any]], int]:
    """One page and the total count: the payments `viewer` sent or received (every payment for
    an ADMIN, and for viewer None: admin's payments list)."""
    visible_to = None if viewer is None or viewer.is_admin else viewer.id
    rows, total = await queries.list_payments(conn, query, visible_to)
    return [payment_json(row) for row in rows], total


async def recipients(
    conn: Conn, principal: Principal, q: str | None, limit: int
) -> list[dict[str, Any]]:
    rows = await queries.recipients(conn, principal.id, q, limit)
    return [{"id": str(r["id"]), "name": r["name"], "email": r["email"]} for r in rows]


# --- status changes -----------------------------------------------------------------------


async def apply_transition(
    conn: Conn,
    row: Any,
    target: str,
    *,
    actor_id: uuid.UUID | None,
    reason: str | None,
    psp_transaction_id: str | None = None,
    lease_until: datetime | None = None,
) -> dict[str, Any]:
    """Move a locked payment row to `target` through the status machine: update, history row
    and events (`payment.status_changed` + the outcome event) in the caller's transaction.
    Returns the payment JSON after the change."""
    current = row["status"]
    states.check_transition(current, target)
    now = datetime.now(UTC)
    payment = payment_json(row)
    payment["status"] = target
    payment["updatedAt"] = iso_z(now)
    if target == "completed":
        payment["completedAt"] = iso_z(now)
    if target == "failed":
        payment["failureReason"] = reason
    if psp_transaction_id:
        payment["pspTransactionId"] = psp_transaction_id
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "payment.status_changed",
            {
                "paymentId": payment["id"],
                "senderId": payment["senderId"],
                "recipientId": payment["recipientId"],
                "oldStatus": current,
                "newStatus": target,
                "reason": reason,
                "amount": payment["amount"],
                "currency": payment["currency"],
                "type": payment["type"],
                "updatedAt": payment["updatedAt"],
            },
        )
    ]
    outcome = states.OUTCOME_EVENTS.get(target)
    if outcome:
        events.append((outcome, {"payment": payment}))
    await queries.record_transition(
        conn,
        row["id"],
        target,
        at=now,
        reason=reason,
        psp_transaction_id=psp_transaction_id,
        lease_until=lease_until if target == "processing" else None,
        history_id=uuid.uuid4(),
        message=reason or f"Status changed from {current} to {target}",
        actor_id=actor_id,
        events=OutboxRows.of(events, actor_id=actor_id),
    )
    return payment


def check_permission(principal: Principal, row: Any, target: str) -> None:
    """Who may change a status (§4): ADMIN any allowed transition; the sender only to
    `cancelled`; anyone else who can see the payment → 403; can't see it → 404.
    Checked before the transition, so the answer does not depend on the payment's state."""
    if not can_see(principal, row):
        raise _not_found()
    if principal.is_admin:
        return
    if row["sender_id"] == principal.id and target == "cancelled":
        return
    if row["sender_id"] == principal.id:
        raise Forbidden("The sender may only cancel a pending payment")
    raise Forbidden("Only the sender or an administrator may change this payment")


async def change_status(
    conn: Conn,
    principal: Principal,
    payment_id: uuid.UUID,
    target: str,
    reason: str | None,
) -> dict[str, Any]:
    """PATCH /status and POST /cancel."""
    async with conn.transaction():
        row = await queries.lock_payment(conn, payment_id)
        if row is None:
            raise _not_found()
        check_permission(principal, row, target)
        payment = await apply_transition(conn, row, target, actor_id=principal.id, reason=reason)
    return payment


# --- webhook ------------------------------------------------------------------------------


async def apply_psp_event(
    conn: Conn,
    *,
    event_id: str,
    payment_id: uuid.UUID,
    status: str,
    psp_transaction_id: str | None,
    failure_reason: str | None,
) -> bool:
    """Apply one verified PSP event. False when this eventId was already applied (nothing
    changes). The event row and the status change commit together."""
    async with conn.transaction():
        fresh = await queries.record_webhook_event(conn, event_id, payment_id, status)
        if not fresh:
            return False
        row = await queries.lock_payment(conn, payment_id)
        if row is None:
            raise _not_found()
        steps = states.path(row["status"], status)
        if steps is None:
            states.check_transition(row["status"], status)  # raises the 409
        for step in steps or []:
            final = step == status
            await apply_transition(
                conn,
                row,
                step,
                actor_id=None,
                reason=(failure_reason or "Declined by the payment processor")
                if final and step == "failed"
                else None,
                psp_transaction_id=psp_transaction_id if final else None,
            )
            row = await queries.lock_payment(conn, payment_id)
    return True


# --- reports ------------------------------------------------------------------------------


async def report(
    conn: Conn, principal: Principal, dates: DateRange, currency: str | None
) -> dict[str, Any]:
    """Counts by status and type, and amounts per currency (never summed across currencies)."""
    assert dates.start is not None and dates.end_exclusive is not None
    viewer = None if principal.is_admin else principal.id
    rows = await queries.report_rows(conn, dates.start, dates.end_exclusive, currency, viewer)
    by_status = dict.fromkeys(states.STATUSES, 0)
    by_type = dict.fromkeys(states.TYPES, 0)
    sums: dict[str, dict[str, int]] = {}
    total = 0
    for row in rows:
        n = int(row["n"])
        total += n
        by_status[row["status"]] += n
        by_type[row["type"]] += n
        entry = sums.setdefault(row["currency"], {"count": 0, "total": 0, "completed": 0})
        entry["count"] += n
        entry["total"] += int(row["total"])
        if row["status"] == "completed":
            entry["completed"] += int(row["total"])
    end_inclusive = dates.end_inclusive
    assert end_inclusive is not None
    return {
        "period": {"start": iso_z(dates.start), "end": iso_z(end_inclusive)},
        "totalPayments": total,
        "byStatus": by_status,
        "byType": by_type,
        "byCurrency": {
            code: {
                "count": entry["count"],
                "totalAmount": format_minor(entry["total"], code),
                "completedAmount": format_minor(entry["completed"], code),
            }
            for code, entry in sorted(sums.items())
        },
    }
