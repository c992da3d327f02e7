"""Tables owned by the payments service.

Money is `amount BIGINT` (minor units, see paysys.core.money) + `currency char(3)`.
Enumerations are text + CHECK. Every list filter and sort of api-contracts §4 has an index
(visibility is "sent or received", so the per-user ones exist for both sides).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import CHAR, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from paysys.core.db import Base, TimestampMixin
from paysys.payments.states import STATUSES, TYPES


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Payment(TimestampMixin, Base):
    __tablename__ = "payments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    sender_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    recipient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(CHAR(3))
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    type: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    failure_reason: Mapped[str | None] = mapped_column(Text)
    psp_transaction_id: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None] = mapped_column()
    # The processor's claim on a `processing` payment: while in the future another processor
    # leaves it alone; once past (crash), any processor takes the payment over.
    processor_lease_until: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_code"),
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint(_in("type", TYPES), name="type"),
        CheckConstraint("char_length(description) BETWEEN 1 AND 500", name="description_length"),
        CheckConstraint("recipient_id IS NULL OR recipient_id <> sender_id", name="not_self"),
        # Visibility (sent or received) + each sort.
        Index("ix_payments_sender_created", "sender_id", "created_at", "id"),
        Index("ix_payments_recipient_created", "recipient_id", "created_at", "id"),
        Index("ix_payments_created", "created_at", "id"),
        Index("ix_payments_amount", "amount", "id"),
        Index("ix_payments_status_created", "status", "created_at", "id"),
        Index("ix_payments_currency_created", "currency", "created_at", "id"),
        Index("ix_payments_type_created", "type", "created_at", "id"),
        # `q`: case-insensitive substring of the description (ILIKE '%q%').
        Index(
            "ix_payments_description_trgm",
            "description",
            postgresql_using="gin",
            postgresql_ops={"description": "gin_trgm_ops"},
        ),
        # The processor's work queues.
        Index(
            "ix_payments_pending_queue",
            "created_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_payments_processing_lease",
            "processor_lease_until",
            postgresql_where=text("status = 'processing'"),
        ),
    )


class PaymentTransaction(Base):
    """Append-only history: one row per status the payment has been in (oldest first)."""

    __tablename__ = "payment_transactions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(Text)
    status_message: Mapped[str | None] = mapped_column(Text)
    psp_transaction_id: Mapped[str | None] = mapped_column(Text)
    actor_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Strict insertion order for "oldest first" even within one timestamp.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=False))

    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="status"),
        Index("ix_payment_transactions_payment", "payment_id", "seq", "created_at"),
    )


class IdempotencyKey(Base):
    """`Idempotency-Key` of POST /api/payments, scoped to the caller, kept 24 h.

    The primary key (caller_id, key) settles races between requests and replicas: the first
    INSERT wins, the others wait for its transaction and then replay what it stored.
    """

    __tablename__ = "idempotency_keys"

    caller_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, server_default=text("'in_progress'"))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    payment_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column()

    __table_args__ = (
        CheckConstraint("state IN ('in_progress', 'completed')", name="state"),
        CheckConstraint("char_length(key) BETWEEN 1 AND 255", name="key_length"),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )


class WebhookEvent(Base):
    """PSP webhook events already applied: the same `eventId` twice changes nothing."""

    __tablename__ = "payment_webhook_events"

    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column()
    status: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index("ix_payment_webhook_events_payment", "payment_id"),)
