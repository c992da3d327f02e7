"""token version instead of a time cut-off; lockout per account and client address

Revision ID: 0007_token_version_lockout
Revises: 0006_revoked_access_tokens

- `users.token_version` (+ `token_version_at`, for the sync worker) replaces
  `users.tokens_valid_after_ms` (api-contracts §1.5 revision 2: integers, never clocks of
  different hosts). Access tokens without a `ver` claim are refused from now on: clients refresh
  once (their sessions are untouched).
- `auth_login_throttle` becomes per (account, client address); the per-account hourly ceiling
  and the password-change quota keep their PostgreSQL copy in `auth_attempt_log`. Both only
  matter while Redis is down; the rows of the old shape are dropped (at most 15 minutes of
  lockout state).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_token_version_lockout"
down_revision: str | None = "0006_revoked_access_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("token_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("users", sa.Column("token_version_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        op.f("ix_users_token_version_at"),
        "users",
        ["token_version_at"],
        postgresql_where=sa.text("token_version_at IS NOT NULL"),
    )
    op.drop_index("ix_users_tokens_valid_after_ms", table_name="users")
    op.drop_column("users", "tokens_valid_after_ms")

    op.drop_table("auth_login_throttle")
    op.create_table(
        "auth_login_throttle",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("client", sa.Text(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lock_level", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "client", name=op.f("pk_auth_login_throttle")),
    )
    op.create_index(
        op.f("ix_auth_login_throttle_last_failure_at"),
        "auth_login_throttle",
        ["last_failure_at"],
    )
    op.create_table(
        "auth_attempt_log",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "scope IN ('login_failure', 'password_change')", name=op.f("ck_auth_attempt_log_scope")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_attempt_log")),
    )
    op.create_index(
        op.f("ix_auth_attempt_log_scope_subject_at"),
        "auth_attempt_log",
        ["scope", "subject", "at"],
    )
    op.create_index(op.f("ix_auth_attempt_log_at"), "auth_attempt_log", ["at"])


def downgrade() -> None:
    op.drop_table("auth_attempt_log")
    op.drop_table("auth_login_throttle")
    op.create_table(
        "auth_login_throttle",
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lock_level", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hour_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hour_failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("email", name=op.f("pk_auth_login_throttle")),
    )
    op.create_index(
        "ix_auth_login_throttle_last_failure_at", "auth_login_throttle", ["last_failure_at"]
    )
    # Every token of the old shape carried `iatMs`; a zero cut-off keeps them all valid.
    op.add_column(
        "users",
        sa.Column(
            "tokens_valid_after_ms", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.create_index("ix_users_tokens_valid_after_ms", "users", ["tokens_valid_after_ms"])
    op.drop_index(op.f("ix_users_token_version_at"), table_name="users")
    op.drop_column("users", "token_version_at")
    op.drop_column("users", "token_version")
