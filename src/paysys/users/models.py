"""The `users` table (migration `0001_foundation`). Written only through `paysys.users.accounts`;
other services read it."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Index, Integer, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from paysys.core.db import Base, TimestampMixin


class User(TimestampMixin, Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text, server_default=text("'CUSTOMER'"))
    password_hash: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    email_verified: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)
    # Access tokens carry the version they were issued under (`ver`); one below this is
    # revoked (api-contracts §1.5). Bumped by password change, role change, deactivation,
    # deletion and logout of all sessions. Redis holds a copy for the hot path.
    token_version: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # When it was last bumped (the database's clock): only for the revocation sync worker,
    # which re-publishes recent bumps to Redis. Never compared with a token.
    token_version_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        CheckConstraint("role IN ('CUSTOMER', 'VENDOR', 'ADMIN')", name="role"),
        Index("uq_users_email_lower", func.lower(text("email")), unique=True),
        Index("ix_users_created_at", "created_at", "id"),
        Index("ix_users_role", "role"),
        Index(
            "ix_users_token_version_at",
            "token_version_at",
            postgresql_where=text("token_version_at IS NOT NULL"),
        ),
    )
