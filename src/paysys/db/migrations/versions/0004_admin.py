"""audit log and system config

Revision ID: 0004_admin
Revises: 0003_payments
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004_admin"
down_revision: str | None = "0003_payments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
