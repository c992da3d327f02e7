"""payments, history, idempotency keys, webhook events

Revision ID: 0003_payments
Revises: 0002_auth
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0003_payments"
down_revision: str | None = "0002_auth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
