"""The `users` table (migration `0001_foundation`). Written only through `paysys.users.accounts`;
other services read it."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Index, Text, func, text
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
    # Tokens issued before this instant (epoch ms) are revoked: the database copy of the
    # Redis "not before" mark, used when Redis is unreachable.
    tokens_valid_after_ms: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = (
        CheckConstraint("role IN ('CUSTOMER', 'VENDOR', 'ADMIN')", name="role"),
        Index("uq_users_email_lower", func.lower(text("email")), unique=True),
        Index("ix_users_created_at", "created_at", "id"),
        Index("ix_users_role", "role"),
        Index("ix_users_tokens_valid_after_ms", "tokens_valid_after_ms"),
    )
