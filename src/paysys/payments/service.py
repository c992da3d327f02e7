"""Payments rules: create (idempotent), read, list, status changes, reports.

Each function owns its database transaction and writes its outbox events in it. Hot paths are
plain SQL through asyncpg (see `paysys.payments.db`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from paysys.core.errors import AppError, Conflict, Forbidden, NotFound, ValidationFailed
from paysys.core.money import CURRENCIES, format_minor, to_decimal
from paysys.core.querydates import DateRange
from paysys.core.timefmt import iso_z
from paysys.core.tokens import Principal
from paysys.payments import states
from paysys.payments.db import NOTIFY_SELECT, Conn, dumps, event_rows, outbox_cte
from paysys.payments.schemas import CreateInput, ListQuery

IDEMPOTENCY_TTL = timedelta(hours=24)

# --- reading rows -------------------------------------------------------------------------

PAYMENT_COLUMNS = """
p.id, p.sender_id, p.recipient_id, p.amount, p.currency, p.status, p.type, p.description,
p.metadata, p.failure_reason, p.psp_transaction_id, p.completed_at, p.created_at,
p.updated_at, s.email AS s_email, s.name AS s_name, r.email AS r_email, r.name AS r_name
"""
PAYMENT_FROM = """
FROM payments p JOIN users s ON s.id = p.sender_id LEFT JOIN users r ON r.id = p.recipient_id
"""

_TRANSACTIONS = """
(SELECT coalesce(json_agg(json_build_object(
    'id', t.id, 'status', t.status, 'statusMessage', t.status_message,
    'pspTransactionId', t.psp_transaction_id,
    'createdAt', to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
  ORDER BY t.seq), '[]'::json)
 FROM payment_transactions t WHERE t.payment_id = p.id) AS transactions
"""

GET_SQL = f"SELECT {PAYMENT_COLUMNS}, {_TRANSACTIONS} {PAYMENT_FROM} WHERE p.id = $1"
LOCK_SQL = f"SELECT {PAYMENT_COLUMNS} {PAYMENT_FROM} WHERE p.id = $1 FOR UPDATE OF p"


def _ts(value: datetime | None) -> str | None:
    return None if value is None else iso_z(value)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def payment_json(row: Any) -> dict[str, Any]:
    """A payment row (PAYMENT_COLUMNS) → the payment JSON of api-contracts §4."""
    currency = row["currency"]
    recipient_id = row["recipient_id"]
    return {
        "id": str(row["id"]),
        "senderId": str(row["sender_id"]),
        "recipientId": str(recipient_id) if recipient_id is not None else None,
        "amount": format_minor(row["amount"], currency),
        "currency": currency,
        "status": row["status"],
        "type": row["type"],
        "description": row["description"],
        "metadata": _json(row["metadata"]) or {},
        "failureReason": row["failure_reason"],
        "pspTransactionId": row["psp_transaction_id"],
        "completedAt": _ts(row["completed_at"]),
        "createdAt": _ts(row["created_at"]),
        "updatedAt": _ts(row["updated_at"]),
        "sender": {"id": str(row["sender_id"]), "email": row["s_email"], "name": row["s_name"]},
        "recipient": (
            {"id": str(recipient_id), "email": row["r_email"], "name": row["r_name"]}
            if recipient_id is not None
            else None
        ),
    }


def can_see(principal: Principal, row: Any) -> bool:
    return (
        principal.is_admin
        or row["sender_id"] == principal.id
        or row["recipient_id"] == principal.id
    )


def _not_found() -> NotFound:
    return NotFound("PAYMENT_NOT_FOUND", "Payment not found")


# --- create -------------------------------------------------------------------------------

_COMPLETE_KEY = """
UPDATE idempotency_keys SET state = 'completed', response_status = 201, response_body = $3,
       payment_id = $4
WHERE caller_id = $1 AND key = $2
"""

_CLAIM_KEY = """
INSERT INTO idempotency_keys AS k (caller_id, key, fingerprint, state, expires_at)
VALUES ($1, $2, $3, 'in_progress', $4)
ON CONFLICT (caller_id, key) DO UPDATE
  SET fingerprint = EXCLUDED.fingerprint, state = 'in_progress', response_status = NULL,
      response_body = NULL, payment_id = NULL, created_at = now(),
      expires_at = EXCLUDED.expires_at
  WHERE k.expires_at <= now()
RETURNING 1
"""
_READ_KEY = """
SELECT fingerprint, state, response_status, response_body FROM idempotency_keys
WHERE caller_id = $1 AND key = $2
"""


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
    limits: tuple[Decimal, Decimal] | None = None,
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
        await conn.execute(f"SET LOCAL lock_timeout = {int(wait_ms)}")
        try:
            claimed = await conn.fetchval(
                _CLAIM_KEY,
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
            stored = await conn.fetchrow(_READ_KEY, principal.id, idempotency_key)
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
        await conn.execute(_COMPLETE_KEY, principal.id, idempotency_key, body.decode(), payment_id)
        return Created(201, body, False)


# A create is ONE statement (one round trip, atomic by itself; with an Idempotency-Key it runs
# between claiming and completing the key, in their transaction): look up sender and recipient,
# insert payment + first history row + outbox event only when the parties pass the rules, and
# return both users so the caller can tell why nothing was inserted. The event's
# sender/recipient objects are filled in from the same rows (jsonb_set).
_CREATE_ONE_SQL = f"""
WITH s AS (
  SELECT id, email, name, is_active, deleted_at IS NOT NULL AS deleted FROM users WHERE id = $2
), r AS (
  SELECT id, email, name, is_active, deleted_at IS NOT NULL AS deleted FROM users
  WHERE id = $3::uuid
  UNION ALL
  SELECT id, email, name, is_active, deleted_at IS NOT NULL AS deleted FROM users
  WHERE $3::uuid IS NULL AND lower(email) = $13::text
), good AS (
  SELECT r.id, r.email, r.name FROM r, s
  WHERE s.is_active AND NOT s.deleted AND r.is_active AND NOT r.deleted AND r.id <> s.id
  LIMIT 1
), p AS (
  INSERT INTO payments (id, sender_id, recipient_id, amount, currency, status, type,
                        description, metadata, created_at, updated_at)
  SELECT $1, $2, good.id, $4, $5, 'pending', $6, $7, $8::jsonb, $9, $9 FROM good
  RETURNING id
), t AS (
  INSERT INTO payment_transactions (id, payment_id, status, status_message, actor_id, created_at)
  SELECT $10, p.id, 'pending', 'Payment created', $2, $9 FROM p
), o AS (
  INSERT INTO outbox (id, type, payload)
  SELECT $11::uuid, 'payment.created',
    jsonb_set(jsonb_set(jsonb_set($12::jsonb,
      '{{data,payment,recipientId}}', to_jsonb(good.id::text)),
      '{{data,payment,sender}}',
      jsonb_build_object('id', s.id::text, 'email', s.email, 'name', s.name)),
      '{{data,payment,recipient}}',
      jsonb_build_object('id', good.id::text, 'email', good.email, 'name', good.name))
  FROM good, s WHERE EXISTS (SELECT 1 FROM p)
)
SELECT s.id AS s_id, s.email AS s_email, s.name AS s_name, s.is_active AS s_active,
       s.deleted AS s_deleted, r.id AS r_id, r.email AS r_email, r.name AS r_name,
       r.is_active AS r_active, r.deleted AS r_deleted,
       (SELECT count(*) FROM p) AS inserted, {NOTIFY_SELECT[len("SELECT ") :]} AS notified
FROM (SELECT 1) AS one LEFT JOIN s ON true LEFT JOIN r ON true
"""  # noqa: S608 - fixed SQL; every value is a bound parameter


async def _insert_payment(
    conn: Conn, principal: Principal, data: CreateInput
) -> tuple[uuid.UUID, bytes]:
    """Insert the payment (history row, `payment.created`) → its id and the response body."""
    payment_id = uuid.uuid4()
    now = datetime.now(UTC)
    field = "recipientId" if data.recipient_id is not None else "recipientEmail"
    placeholder = {"id": str(principal.id), "email": "", "name": ""}
    draft = _payment_dict(principal, data, payment_id, now, placeholder, None)
    ids, _types, payloads = event_rows([("payment.created", {"payment": draft})], principal.id)
    row = await conn.fetchrow(
        _CREATE_ONE_SQL,
        payment_id,
        principal.id,
        data.recipient_id,
        data.amount,
        data.currency,
        data.type,
        data.description,
        dumps(data.metadata),
        now,
        uuid.uuid4(),
        ids[0],
        payloads[0],
        data.recipient_email,
    )
    assert row is not None
    sender = None
    if row["s_id"] is not None:
        sender = {"id": row["s_id"], "is_active": row["s_active"], "deleted": row["s_deleted"]}
    recipient = None
    if row["r_id"] is not None:
        recipient = {"id": row["r_id"], "is_active": row["r_active"], "deleted": row["r_deleted"]}
    _check_parties(principal, field, sender, recipient)
    assert row["inserted"] == 1
    payment = _payment_dict(
        principal,
        data,
        payment_id,
        now,
        {"id": str(principal.id), "email": row["s_email"], "name": row["s_name"]},
        {"id": str(row["r_id"]), "email": row["r_email"], "name": row["r_name"]},
    )
    return payment_id, dumps({"success": True, "data": payment}).encode()


def check_limits(data: CreateInput, limits: tuple[Decimal, Decimal]) -> None:
    """`payment.minAmount` / `payment.maxAmount` (face values, any currency) from config."""
    low, high = limits
    face = to_decimal(data.amount, data.currency)
    if face < low:
        raise ValidationFailed("amount", f"must be at least {low}")
    if face > high:
        raise ValidationFailed("amount", f"must not exceed {high}")


def _payment_dict(
    principal: Principal,
    data: CreateInput,
    payment_id: uuid.UUID,
    now: datetime,
    sender: dict[str, str],
    recipient: dict[str, str] | None,
) -> dict[str, Any]:
    return {
        "id": str(payment_id),
        "senderId": str(principal.id),
        "recipientId": recipient["id"] if recipient else None,
        "amount": format_minor(data.amount, data.currency),
        "currency": data.currency,
        "status": "pending",
        "type": data.type,
        "description": data.description,
        "metadata": data.metadata,
        "failureReason": None,
        "pspTransactionId": None,
        "completedAt": None,
        "createdAt": iso_z(now),
        "updatedAt": iso_z(now),
        "sender": sender,
        "recipient": recipient,
    }


# --- read ---------------------------------------------------------------------------------


async def get_payment(conn: Conn, principal: Principal, payment_id: uuid.UUID) -> dict[str, Any]:
    row = await conn.fetchrow(GET_SQL, payment_id)
    if row is None or not can_see(principal, row):
        raise _not_found()
    payment = payment_json(row)
    payment["transactions"] = _json(row["transactions"])
    return payment


_SORT_COLUMNS = {"createdAt": "p.created_at", "amount": "p.amount", "status": "p.status"}


def _amount_bound(column_sql: str, op: str, value: tuple[int, int], args: list[Any]) -> str:
    """`amount <op> bound` where the bound (whole, 4-digit fraction) is a face value and each
    row's currency decides its scale (no currency filter: amounts compared by face value)."""
    whole, frac4 = value
    args.append(whole * 10_000 + frac4)
    placeholder = f"${len(args)}"
    # amount * 10^(4 - digits) is the row's face value in 1/10000 units: exact integers.
    scale = _scale_case()
    return f"({column_sql} * {scale}) {op} {placeholder}::bigint"


_SCALE_CASE: str | None = None


def _scale_case() -> str:
    global _SCALE_CASE
    if _SCALE_CASE is None:
        by_digits: dict[int, list[str]] = {}
        for code, digits in CURRENCIES.items():
            by_digits.setdefault(digits, []).append(code)
        arms = " ".join(
            f"WHEN p.currency IN ({', '.join(repr(c) for c in sorted(codes))}) "
            f"THEN {10 ** (4 - digits)}"
            for digits, codes in sorted(by_digits.items())
            if digits != 2
        )
        _SCALE_CASE = f"(CASE {arms} ELSE 100 END)"
    return _SCALE_CASE


def list_where(query: ListQuery, viewer: Principal | None) -> tuple[str, list[Any]]:
    """WHERE clause + args for the payments list (viewer None or ADMIN: every payment)."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if viewer is not None and not viewer.is_admin:
        placeholder = arg(viewer.id)
        clauses.append(f"(p.sender_id = {placeholder} OR p.recipient_id = {placeholder})")
    if query.status:
        clauses.append(f"p.status = {arg(query.status)}")
    if query.type:
        clauses.append(f"p.type = {arg(query.type)}")
    if query.currency:
        clauses.append(f"p.currency = {arg(query.currency)}")
    if query.dates.start is not None:
        clauses.append(f"p.created_at >= {arg(query.dates.start)}")
    if query.dates.end_exclusive is not None:
        clauses.append(f"p.created_at < {arg(query.dates.end_exclusive)}")
    if query.min_minor is not None:
        clauses.append(f"p.amount >= {arg(query.min_minor)}")
    if query.max_minor is not None:
        clauses.append(f"p.amount <= {arg(query.max_minor)}")
    if query.min_face is not None:
        clauses.append(_amount_bound("p.amount", ">=", query.min_face, args))
    if query.max_face is not None:
        clauses.append(_amount_bound("p.amount", "<=", query.max_face, args))
    if query.q:
        escaped = query.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(f"p.description ILIKE {arg('%' + escaped + '%')}")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


async def list_payments(
    conn: Conn, query: ListQuery, viewer: Principal | None
) -> tuple[list[dict[str, Any]], int]:
    """One page and the total count (admin's payments list calls this with viewer=None)."""
    where, args = list_where(query, viewer)
    column = _SORT_COLUMNS[query.sort]
    direction = "ASC" if query.order == "asc" else "DESC"
    order = f"{column} {direction}, p.id {direction}"
    if query.sort != "createdAt":
        order = f"{column} {direction}, p.created_at {direction}, p.id {direction}"
    limit_arg, offset_arg = len(args) + 1, len(args) + 2
    sql = (
        f"SELECT {PAYMENT_COLUMNS}, count(*) OVER () AS total_count {PAYMENT_FROM}{where} "
        f"ORDER BY {order} LIMIT ${limit_arg} OFFSET ${offset_arg}"
    )
    rows = await conn.fetch(sql, *args, query.limit, (query.page - 1) * query.limit)
    if rows:
        total = int(rows[0]["total_count"])
    else:
        count_sql = f"SELECT count(*) FROM payments p{where}"  # noqa: S608 - bound values
        total = int(await conn.fetchval(count_sql, *args))
    return [payment_json(row) for row in rows], total


_RECIPIENTS_SQL = """
SELECT id, name, email FROM users
WHERE is_active AND deleted_at IS NULL AND id <> $1
  AND ($2::text IS NULL OR name ILIKE $2 OR email ILIKE $2)
ORDER BY name, email, id
LIMIT $3
"""


async def recipients(
    conn: Conn, principal: Principal, q: str | None, limit: int
) -> list[dict[str, Any]]:
    pattern = None
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
    rows = await conn.fetch(_RECIPIENTS_SQL, principal.id, pattern, limit)
    return [{"id": str(r["id"]), "name": r["name"], "email": r["email"]} for r in rows]


# --- status changes -----------------------------------------------------------------------

_APPLY_SQL = f"""
WITH u AS (
  UPDATE payments SET status = $2, updated_at = $3,
         completed_at = CASE WHEN $2 = 'completed' THEN $3 ELSE completed_at END,
         failure_reason = CASE WHEN $2 = 'failed' THEN $4 ELSE failure_reason END,
         psp_transaction_id = coalesce($5, psp_transaction_id),
         processor_lease_until = $6
  WHERE id = $1
), t AS (
  INSERT INTO payment_transactions
    (id, payment_id, status, status_message, psp_transaction_id, actor_id, created_at)
  VALUES ($7, $1, $2, $8, $5, $9, $3)
), {outbox_cte(10, 11, 12)}
{NOTIFY_SELECT}
"""  # noqa: S608 - fixed SQL; every value is a bound parameter


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
    ids, types, payloads = event_rows(events, actor_id)
    message = reason or f"Status changed from {current} to {target}"
    await conn.execute(
        _APPLY_SQL,
        row["id"],
        target,
        now,
        reason,
        psp_transaction_id,
        lease_until if target == "processing" else None,
        uuid.uuid4(),
        message,
        actor_id,
        ids,
        types,
        payloads,
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
        row = await conn.fetchrow(LOCK_SQL, payment_id)
        if row is None:
            raise _not_found()
        check_permission(principal, row, target)
        payment = await apply_transition(conn, row, target, actor_id=principal.id, reason=reason)
    return payment


# --- webhook ------------------------------------------------------------------------------

_RECORD_EVENT = """
INSERT INTO payment_webhook_events (event_id, payment_id, status) VALUES ($1, $2, $3)
ON CONFLICT (event_id) DO NOTHING RETURNING 1
"""


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
        fresh = await conn.fetchval(_RECORD_EVENT, event_id, payment_id, status)
        if not fresh:
            return False
        row = await conn.fetchrow(LOCK_SQL, payment_id)
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
            row = await conn.fetchrow(LOCK_SQL, payment_id)
    return True


# --- reports ------------------------------------------------------------------------------

_REPORT_SQL = """
SELECT currency, status, type, count(*) AS n, sum(amount) AS total
FROM payments p
WHERE p.created_at >= $1 AND p.created_at < $2
  AND ($3::text IS NULL OR p.currency = $3)
  AND ($4::uuid IS NULL OR p.sender_id = $4 OR p.recipient_id = $4)
GROUP BY currency, status, type
"""


async def report(
    conn: Conn, principal: Principal, dates: DateRange, currency: str | None
) -> dict[str, Any]:
    """Counts by status and type, and amounts per currency (never summed across currencies)."""
    assert dates.start is not None and dates.end_exclusive is not None
    viewer = None if principal.is_admin else principal.id
    rows = await conn.fetch(_REPORT_SQL, dates.start, dates.end_exclusive, currency, viewer)
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
