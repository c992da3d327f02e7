"""Every SQL statement of the payments service, one function each.

Why plain SQL: create, get and list carry the load, and asyncpg with fixed statements (prepared
once per connection) costs a fraction of the ORM per request (docs/benchmarks.md). The other
statements (status changes, webhook, processor, idempotency keys) run on the same asyncpg
connection and inside the same transactions as those, so they are plain SQL too rather than a
second way to reach the same tables. The rules (who may see or change what, the status machine,
the idempotency flow) live in `paysys.payments.service`; these functions only read and write.

Events are written by `paysys.core.events.outbox` (`OutboxRows` + `insert_sql`) inside the
statement that makes the change, so a change and its events commit together in one round trip.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from paysys.core import money
from paysys.core.events import outbox
from paysys.core.timefmt import iso_or_none
from paysys.payments.db import Conn, dumps
from paysys.payments.schemas import ListQuery

# --- the payment row and its JSON ---------------------------------------------------------------


def _text(value: Any) -> Any:
    return None if value is None else str(value)


def _same(value: Any) -> Any:
    return value


def _decoded(value: Any) -> Any:
    """A json/jsonb column: decoded already on the service's pool (SQLAlchemy's asyncpg
    codecs), JSON text on a bare asyncpg connection."""
    return json.loads(value) if isinstance(value, str) else value


def _object(value: Any) -> Any:
    return _decoded(value) or {}


@dataclass(frozen=True, slots=True)
class PaymentField:
    """One field of a payment: its column, its key in the payment JSON (api-contracts §4), how
    the stored value is shown there, and whether the create statement writes it."""

    column: str
    key: str
    show: Callable[[Any], Any] = _same
    created: bool = False  # set by create (from the new row); the others start NULL
    cast: str = ""  # the parameter's SQL type in create, when PostgreSQL cannot infer it


# The one list to edit when a payment field is added (with the migration and the model, and,
# when a client sets it, CreateInput and the new row in service._insert_payment): every statement
# that returns a payment reads these columns, create writes the `created` ones, and
# `payment_json` shows them in this order. `amount` is shown with its row's currency (below).
PAYMENT_FIELDS: tuple[PaymentField, ...] = (
    PaymentField("id", "id", _text, created=True),
    PaymentField("sender_id", "senderId", _text, created=True),
    PaymentField("recipient_id", "recipientId", _text),  # the recipient create found
    PaymentField("amount", "amount", created=True),
    PaymentField("currency", "currency", created=True),
    PaymentField("status", "status", created=True),
    PaymentField("type", "type", created=True),
    PaymentField("description", "description", created=True),
    PaymentField("metadata", "metadata", _object, created=True, cast="jsonb"),
    PaymentField("failure_reason", "failureReason"),
    PaymentField("psp_transaction_id", "pspTransactionId"),
    PaymentField("completed_at", "completedAt", iso_or_none),
    PaymentField("created_at", "createdAt", iso_or_none, created=True),
    PaymentField("updated_at", "updatedAt", iso_or_none, created=True),
)
COLUMNS = tuple(f.column for f in PAYMENT_FIELDS)
CREATED_COLUMNS = tuple(f.column for f in PAYMENT_FIELDS if f.created)
# Sender and recipient (`users`) are shown as objects beside the payment's own fields.
PARTY_COLUMNS = ("s_email", "s_name", "r_email", "r_name")

PAYMENT_SELECT = ", ".join(f"p.{c}" for c in COLUMNS) + (
    ", s.email AS s_email, s.name AS s_name, r.email AS r_email, r.name AS r_name"
)
PAYMENT_FROM = (
    "FROM payments p JOIN users s ON s.id = p.sender_id LEFT JOIN users r ON r.id = p.recipient_id"
)


def payment_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A payment row (PAYMENT_SELECT, or a mapping with the same keys) → the payment JSON."""
    shown = {f.key: f.show(row[f.column]) for f in PAYMENT_FIELDS}
    shown["amount"] = money.format_minor(row["amount"], row["currency"])
    shown["sender"] = {"id": shown["senderId"], "email": row["s_email"], "name": row["s_name"]}
    shown["recipient"] = (
        {"id": shown["recipientId"], "email": row["r_email"], "name": row["r_name"]}
        if shown["recipientId"] is not None
        else None
    )
    return shown


def new_payment_row(created: Mapping[str, Any], **others: Any) -> dict[str, Any]:
    """A row with every payment and party column: the `created` values, then `others`
    (e.g. the recipient and the parties' names), None for the rest."""
    row = dict.fromkeys((*COLUMNS, *PARTY_COLUMNS))
    row.update(created)
    row.update(others)
    return row


# --- create -----------------------------------------------------------------------------------

# The create statement's parameters, by name: the new payment's `created` columns, then the rest.
_CREATE_PARAMS = (
    *CREATED_COLUMNS,
    "recipient_id",
    "recipient_email",
    "history_id",
    "event_ids",
    "event_types",
    "event_payloads",
)
_P = SimpleNamespace(**{name: f"${number}" for number, name in enumerate(_CREATE_PARAMS, 1)})
_JSONB = frozenset(f.column for f in PAYMENT_FIELDS if f.cast == "jsonb")
_NEW_VALUES = ", ".join(
    getattr(_P, f.column) + (f"::{f.cast}" if f.cast else "") for f in PAYMENT_FIELDS if f.created
)

# A user as the create rules need them: who, and whether they may pay or be paid.
_PARTY = "SELECT id, email, name, is_active, deleted_at IS NOT NULL AS deleted FROM users"

# `payment.created` as core.events.outbox built it (parties left blank), its payment completed
# with the parties this statement found; no `parties` row (nothing inserted) → no event.
_CREATED_EVENT = outbox.insert_sql(
    _P.event_ids,
    _P.event_types,
    _P.event_payloads,
    payload="jsonb_set(e.payload, '{data,payment}', "
    "(e.payload #> '{data,payment}') || parties.payment)",
    join="parties",
)

_CREATE_SQL = f"""
WITH sender AS (
  {_PARTY} WHERE id = {_P.sender_id}
), recipient AS (
  -- by id, or by email when no id is given
  {_PARTY} WHERE id = {_P.recipient_id}::uuid
  UNION ALL
  {_PARTY} WHERE {_P.recipient_id}::uuid IS NULL AND lower(email) = {_P.recipient_email}::text
), payee AS (
  -- the recipient, only when both parties pass the rules of §4 (no row: nothing is written)
  SELECT recipient.id, recipient.email, recipient.name FROM recipient, sender
  WHERE sender.is_active AND NOT sender.deleted AND recipient.is_active AND NOT recipient.deleted
    AND recipient.id <> sender.id
  LIMIT 1
), payment AS (
  INSERT INTO payments (recipient_id, {", ".join(CREATED_COLUMNS)})
  SELECT payee.id, {_NEW_VALUES} FROM payee
  RETURNING id
), history AS (
  -- the first history row
  INSERT INTO payment_transactions (id, payment_id, status, status_message, actor_id, created_at)
  SELECT {_P.history_id}, payment.id, {_P.status}, 'Payment created', {_P.sender_id},
         {_P.created_at}
  FROM payment
), parties AS (
  -- the parties as `payment.created` shows them
  SELECT jsonb_build_object(
    'recipientId', payee.id::text,
    'sender', jsonb_build_object('id', sender.id::text, 'email', sender.email, 'name', sender.name),
    'recipient', jsonb_build_object('id', payee.id::text, 'email', payee.email, 'name', payee.name)
  ) AS payment
  FROM payee, sender WHERE EXISTS (SELECT 1 FROM payment)
), event AS ({_CREATED_EVENT})
-- both users as found (or NULL), so the service can tell why nothing was written
SELECT sender.id AS s_id, sender.email AS s_email, sender.name AS s_name,
       sender.is_active AS s_active, sender.deleted AS s_deleted,
       recipient.id AS r_id, recipient.email AS r_email, recipient.name AS r_name,
       recipient.is_active AS r_active, recipient.deleted AS r_deleted,
       (SELECT count(*) FROM payment) AS inserted, {outbox.NOTIFY_SQL} AS notified
FROM (SELECT 1) AS one LEFT JOIN sender ON true LEFT JOIN recipient ON true
"""  # noqa: S608 - fixed SQL; every value is a bound parameter


async def create_payment(
    conn: Conn,
    created: Mapping[str, Any],
    *,
    recipient_id: uuid.UUID | None,
    recipient_email: str | None,
    history_id: uuid.UUID,
    events: outbox.OutboxRows,
) -> Any:
    """Insert a payment (`created`: its CREATED_COLUMNS), its first history row and its
    `payment.created` event, only when sender and recipient pass the rules; return both users
    as found (`s_*`, `r_*`, NULL when absent) and `inserted` (1 or 0).

    ONE statement on purpose: one round trip, atomic without a transaction of its own
    (docs/payments.md "Hot paths", docs/benchmarks.md)."""
    values = {
        # asyncpg takes jsonb parameters as JSON text
        **{c: dumps(created[c]) if c in _JSONB else created[c] for c in CREATED_COLUMNS},
        "recipient_id": recipient_id,
        "recipient_email": recipient_email,
        "history_id": history_id,
        "event_ids": events.ids,
        "event_types": events.types,
        "event_payloads": events.payloads,
    }
    return await conn.fetchrow(_CREATE_SQL, *(values[name] for name in _CREATE_PARAMS))


# --- idempotency keys ---------------------------------------------------------------------------

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


async def set_lock_timeout(conn: Conn, milliseconds: int) -> None:
    """Bound how long the current transaction waits for a row lock (here: a key held by a
    concurrent request); past it asyncpg raises `LockNotAvailableError`."""
    await conn.execute(f"SET LOCAL lock_timeout = {int(milliseconds)}")


async def claim_key(
    conn: Conn, caller_id: uuid.UUID, key: str, fingerprint: str, expires_at: datetime
) -> bool:
    """Claim an Idempotency-Key for this transaction: True when it was free or expired (then
    it is ours until commit), False when a completed record holds it. A concurrent claim of the
    same key waits on the primary key until the first transaction ends."""
    return bool(await conn.fetchval(_CLAIM_KEY, caller_id, key, fingerprint, expires_at))


async def read_key(conn: Conn, caller_id: uuid.UUID, key: str) -> Any:
    """The stored record of a key (fingerprint, state, response status and body)."""
    return await conn.fetchrow(
        "SELECT fingerprint, state, response_status, response_body FROM idempotency_keys "
        "WHERE caller_id = $1 AND key = $2",
        caller_id,
        key,
    )


async def complete_key(
    conn: Conn, caller_id: uuid.UUID, key: str, body: str, payment_id: uuid.UUID
) -> None:
    """Store the 201 answer on a claimed key (replayed byte for byte to later requests)."""
    await conn.execute(
        "UPDATE idempotency_keys SET state = 'completed', response_status = 201, "
        "response_body = $3, payment_id = $4 WHERE caller_id = $1 AND key = $2",
        caller_id,
        key,
        body,
        payment_id,
    )


async def delete_expired_keys(conn: Conn) -> None:
    """Drop key records past their 24 h (expired ones are already ignored by `claim_key`)."""
    await conn.execute("DELETE FROM idempotency_keys WHERE expires_at < now()")


# --- read ---------------------------------------------------------------------------------------

_HISTORY = """
(SELECT coalesce(json_agg(json_build_object(
    'id', t.id, 'status', t.status, 'statusMessage', t.status_message,
    'pspTransactionId', t.psp_transaction_id,
    'createdAt', to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
  ORDER BY t.seq), '[]'::json)
 FROM payment_transactions t WHERE t.payment_id = p.id) AS transactions
"""
_GET_SQL = f"SELECT {PAYMENT_SELECT}, {_HISTORY} {PAYMENT_FROM} WHERE p.id = $1"
_LOCK_SQL = f"SELECT {PAYMENT_SELECT} {PAYMENT_FROM} WHERE p.id = $1 FOR UPDATE OF p"


async def get_payment(conn: Conn, payment_id: uuid.UUID) -> Any:
    """A payment row with its parties and its history as JSON text (`transactions`, oldest
    first, already in API shape): one statement, one round trip."""
    return await conn.fetchrow(_GET_SQL, payment_id)


def history_json(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `transactions` of a `get_payment` row: the history in API shape."""
    history: list[dict[str, Any]] = _decoded(row["transactions"])
    return history


async def lock_payment(conn: Conn, payment_id: uuid.UUID) -> Any:
    """A payment row, locked for a status change until the transaction ends."""
    return await conn.fetchrow(_LOCK_SQL, payment_id)


_SORT_COLUMNS = {"createdAt": "p.created_at", "amount": "p.amount", "status": "p.status"}


def _contains(text: str) -> str:
    """An ILIKE pattern matching `text` literally anywhere (`%`, `_` and `\\` escaped)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_where(query: ListQuery, visible_to: uuid.UUID | None) -> tuple[str, list[Any]]:
    """WHERE clause + arguments of the payments list (`visible_to`: only payments this user
    sent or received; None: every payment). Each filter has an index (models.py)."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if visible_to is not None:
        placeholder = arg(visible_to)
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
    # Amount bounds: minor units of the currency filter, else face units (each row scaled by
    # its own currency, see core.money).
    if query.currency:
        amount, cast = "p.amount", ""
    else:
        amount, cast = money.face_units_sql("p.amount", "p.currency"), "::bigint"
    if query.min_amount is not None:
        clauses.append(f"{amount} >= {arg(query.min_amount)}{cast}")
    if query.max_amount is not None:
        clauses.append(f"{amount} <= {arg(query.max_amount)}{cast}")
    if query.q:
        clauses.append(f"p.description ILIKE {arg(_contains(query.q))}")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


async def list_payments(
    conn: Conn, query: ListQuery, visible_to: uuid.UUID | None
) -> tuple[list[Any], int]:
    """One page of payment rows and the total count. Usually one statement (the total rides
    along as a window count); a page past the end costs a second, counting one."""
    where, args = list_where(query, visible_to)
    column = _SORT_COLUMNS[query.sort]
    direction = "ASC" if query.order == "asc" else "DESC"
    order = f"{column} {direction}, p.id {direction}"
    if query.sort != "createdAt":
        order = f"{column} {direction}, p.created_at {direction}, p.id {direction}"
    limit_arg, offset_arg = len(args) + 1, len(args) + 2
    sql = (
        f"SELECT {PAYMENT_SELECT}, count(*) OVER () AS total_count {PAYMENT_FROM}{where} "
        f"ORDER BY {order} LIMIT ${limit_arg} OFFSET ${offset_arg}"
    )
    rows = await conn.fetch(sql, *args, query.limit, (query.page - 1) * query.limit)
    if rows:
        return list(rows), int(rows[0]["total_count"])
    count_sql = f"SELECT count(*) FROM payments p{where}"  # noqa: S608 - bound values
    return [], int(await conn.fetchval(count_sql, *args))


_RECIPIENTS_SQL = """
SELECT id, name, email FROM users
WHERE is_active AND deleted_at IS NULL AND id <> $1 AND role IN ('CUSTOMER', 'VENDOR')
  AND ($2::text IS NULL OR name ILIKE $2 OR email ILIKE $2)
ORDER BY name, email, id
LIMIT $3
"""


async def recipients(conn: Conn, caller_id: uuid.UUID, q: str | None, limit: int) -> list[Any]:
    """Active CUSTOMER and VENDOR accounts other than the caller whose name or email contains
    `q`, by name. ADMIN accounts are never listed (§4): any user may call this lookup."""
    return list(await conn.fetch(_RECIPIENTS_SQL, caller_id, _contains(q) if q else None, limit))


_REPORT_SQL = """
SELECT currency, status, type, count(*) AS n, sum(amount) AS total
FROM payments p
WHERE p.created_at >= $1 AND p.created_at < $2
  AND ($3::text IS NULL OR p.currency = $3)
  AND ($4::uuid IS NULL OR p.sender_id = $4 OR p.recipient_id = $4)
GROUP BY currency, status, type
"""


async def report_rows(
    conn: Conn,
    start: datetime,
    end_exclusive: datetime,
    currency: str | None,
    visible_to: uuid.UUID | None,
) -> list[Any]:
    """Count and sum (minor units) per currency, status and type of the payments created in
    `[start, end_exclusive)`, optionally of one currency and of one user's payments."""
    return list(await conn.fetch(_REPORT_SQL, start, end_exclusive, currency, visible_to))


# --- status changes -----------------------------------------------------------------------------

_TRANSITION_SQL = f"""
WITH payment AS (
  UPDATE payments SET status = $2, updated_at = $3,
         completed_at = CASE WHEN $2 = 'completed' THEN $3 ELSE completed_at END,
         failure_reason = CASE WHEN $2 = 'failed' THEN $4 ELSE failure_reason END,
         psp_transaction_id = coalesce($5, psp_transaction_id),
         processor_lease_until = $6
  WHERE id = $1
), history AS (
  INSERT INTO payment_transactions
    (id, payment_id, status, status_message, psp_transaction_id, actor_id, created_at)
  VALUES ($7, $1, $2, $8, $5, $9, $3)
), event AS ({outbox.insert_sql("$10", "$11", "$12")})
SELECT {outbox.NOTIFY_SQL}
"""  # noqa: S608 - fixed SQL; every value is a bound parameter


async def record_transition(
    conn: Conn,
    payment_id: uuid.UUID,
    status: str,
    *,
    at: datetime,
    reason: str | None,
    psp_transaction_id: str | None,
    lease_until: datetime | None,
    history_id: uuid.UUID,
    message: str,
    actor_id: uuid.UUID | None,
    events: outbox.OutboxRows,
) -> None:
    """Set a payment's status (with `completed_at`, `failure_reason`, the PSP id and the
    processor lease as the status requires), append its history row and write its events:
    one statement in the caller's transaction."""
    await conn.execute(
        _TRANSITION_SQL,
        payment_id,
        status,
        at,
        reason,
        psp_transaction_id,
        lease_until,
        history_id,
        message,
        actor_id,
        events.ids,
        events.types,
        events.payloads,
    )


async def record_webhook_event(
    conn: Conn, event_id: str, payment_id: uuid.UUID, status: str
) -> bool:
    """Remember a PSP event id: False when it was already recorded (applied before)."""
    return bool(
        await conn.fetchval(
            "INSERT INTO payment_webhook_events (event_id, payment_id, status) "
            "VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING RETURNING 1",
            event_id,
            payment_id,
            status,
        )
    )


# --- the processor's queue ------------------------------------------------------------------------

_DUE_SQL = """
SELECT id FROM payments
WHERE (status = 'pending' AND created_at <= now() - make_interval(secs => $1))
   OR (status = 'processing'
       AND (processor_lease_until IS NULL OR processor_lease_until < now()))
ORDER BY created_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""
_ROWS_SQL = f"SELECT {PAYMENT_SELECT} {PAYMENT_FROM} WHERE p.id = ANY($1::uuid[])"


async def lock_due(conn: Conn, delay_s: float, limit: int) -> list[uuid.UUID]:
    """Lock up to `limit` payments due for processing: pending for at least `delay_s`, or
    processing without a live lease. Rows another processor holds are skipped, not waited for."""
    return [row["id"] for row in await conn.fetch(_DUE_SQL, delay_s, limit)]


async def payments_by_id(conn: Conn, ids: Sequence[uuid.UUID]) -> list[Any]:
    """Payment rows (PAYMENT_SELECT) of `ids`."""
    return list(await conn.fetch(_ROWS_SQL, ids))


async def renew_lease(conn: Conn, payment_id: uuid.UUID, until: datetime) -> None:
    """Extend this processor's lease on a payment it took over."""
    await conn.execute(
        "UPDATE payments SET processor_lease_until = $2 WHERE id = $1", payment_id, until
    )


async def release_leases(conn: Conn, ids: Sequence[uuid.UUID]) -> None:
    """Hand unfinished `processing` payments back at once (any processor may take them)."""
    await conn.execute(
        "UPDATE payments SET processor_lease_until = NULL "
        "WHERE id = ANY($1::uuid[]) AND status = 'processing'",
        ids,
    )
