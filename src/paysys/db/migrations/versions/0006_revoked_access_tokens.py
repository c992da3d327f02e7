"""access tokens revoked on their own (logout), for the database revocation fallback

Revision ID: 0006_revoked_access_tokens
Revises: 0005_profile
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_revoked_access_tokens"
down_revision: str | None = "0005_profile"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auth_revoked_access_tokens",
        sa.Column("jti", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "revoked_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_auth_revoked_access_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_auth_revoked_access_tokens")),
    )
    for column in ("revoked_at", "expires_at"):
        op.create_index(
            op.f(f"ix_auth_revoked_access_tokens_{column}"),
            "auth_revoked_access_tokens",
            [column],
        )


def downgrade() -> None:
    op.drop_table("auth_revoked_access_tokens")
