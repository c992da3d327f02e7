"""payments, history, idempotency keys, webhook events

Revision ID: 0003_payments
Revises: 0002_auth
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_payments"
down_revision: str | None = "0002_auth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUS_CHECK = "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')"


def upgrade() -> None:
    # Trigram index for `q` (case-insensitive substring of the description).
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table(
        "idempotency_keys",
        sa.Column("caller_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'in_progress'"), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("payment_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('in_progress', 'completed')", name=op.f("ck_idempotency_keys_state")
        ),
        sa.CheckConstraint(
            "char_length(key) BETWEEN 1 AND 255", name=op.f("ck_idempotency_keys_key_length")
        ),
        sa.PrimaryKeyConstraint("caller_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        "ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"], unique=False
    )
    op.create_table(
        "payment_webhook_events",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_payment_webhook_events")),
    )
    op.create_index(
        "ix_payment_webhook_events_payment", "payment_webhook_events", ["payment_id"], unique=False
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("sender_id", sa.Uuid(), nullable=False),
        sa.Column("recipient_id", sa.Uuid(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("psp_transaction_id", sa.Text(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processor_lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_payments_currency_code")),
        sa.CheckConstraint(_STATUS_CHECK, name=op.f("ck_payments_status")),
        sa.CheckConstraint(
            "type IN ('instant', 'scheduled', 'recurring')", name=op.f("ck_payments_type")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_amount_positive")),
        sa.CheckConstraint(
            "char_length(description) BETWEEN 1 AND 500",
            name=op.f("ck_payments_description_length"),
        ),
        sa.CheckConstraint(
            "recipient_id IS NULL OR recipient_id <> sender_id", name=op.f("ck_payments_not_self")
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"], ["users.id"], name=op.f("fk_payments_recipient_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["sender_id"], ["users.id"], name=op.f("fk_payments_sender_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
    )
    op.create_index("ix_payments_amount", "payments", ["amount", "id"], unique=False)
    op.create_index("ix_payments_created", "payments", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_payments_currency_created", "payments", ["currency", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_payments_description_trgm",
        "payments",
        ["description"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"description": "gin_trgm_ops"},
    )
    op.create_index(
        "ix_payments_pending_queue",
        "payments",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_payments_processing_lease",
        "payments",
        ["processor_lease_until"],
        unique=False,
        postgresql_where=sa.text("status = 'processing'"),
    )
    op.create_index(
        "ix_payments_recipient_created",
        "payments",
        ["recipient_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_payments_sender_created", "payments", ["sender_id", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_payments_status_created", "payments", ["status", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_payments_type_created", "payments", ["type", "created_at", "id"], unique=False
    )
    op.create_table(
        "payment_transactions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=True),
        sa.Column("psp_transaction_id", sa.Text(), nullable=True),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.CheckConstraint(_STATUS_CHECK, name=op.f("ck_payment_transactions_status")),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_payment_transactions_payment_id_payments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_transactions")),
    )
    op.create_index(
        "ix_payment_transactions_payment",
        "payment_transactions",
        ["payment_id", "seq", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_payment_transactions_payment", table_name="payment_transactions")
    op.drop_table("payment_transactions")
    for name in (
        "ix_payments_type_created",
        "ix_payments_status_created",
        "ix_payments_sender_created",
        "ix_payments_recipient_created",
        "ix_payments_processing_lease",
        "ix_payments_pending_queue",
        "ix_payments_description_trgm",
        "ix_payments_currency_created",
        "ix_payments_created",
        "ix_payments_amount",
    ):
        op.drop_index(name, table_name="payments")
    op.drop_table("payments")
    op.drop_index("ix_payment_webhook_events_payment", table_name="payment_webhook_events")
    op.drop_table("payment_webhook_events")
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
