"""uploaded avatars

Revision ID: 0008_profile_avatars
Revises: 0007_token_version_lockout

`profile_avatars`: one re-encoded WebP per user (api-contracts §6 revision 2), served publicly
at `/api/profile/avatar/{userId}`. Deleted with the user row (cascade) and, since users are
soft-deleted, by the profile service on `user.deleted`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_profile_avatars"
down_revision: str | None = "0007_token_version_lockout"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "profile_avatars",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_profile_avatars_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_profile_avatars")),
    )


def downgrade() -> None:
    op.drop_table("profile_avatars")
