"""auth sessions and login attempts

Revision ID: 0002_auth
Revises: 0001_foundation
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0002_auth"
down_revision: str | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
