"""profiles

Revision ID: 0005_profile
Revises: 0004_admin
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0005_profile"
down_revision: str | None = "0004_admin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
