"""Tables owned by the profile service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, LargeBinary, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from paysys.core.db import Base, TimestampMixin


class Profile(TimestampMixin, Base):
    """One row per user. `preferences` holds only what the user set (defaults are merged on
    read), so changing a default reaches everyone who never chose otherwise."""

    __tablename__ = "profiles"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    phone_number: Mapped[str | None] = mapped_column(Text, default=None)
    address: Mapped[str | None] = mapped_column(Text, default=None)
    avatar_url: Mapped[str | None] = mapped_column(Text, default=None)
    bio: Mapped[str | None] = mapped_column(Text, default=None)
    preferences: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # Set when the user was deleted and the personal data above was erased (user.deleted).
    personal_data_removed_at: Mapped[datetime | None] = mapped_column(default=None)


class ProfileAvatar(Base):
    """An uploaded avatar, re-encoded (profile.avatars): kept apart from `profiles` so reading a
    profile never loads image bytes. Gone with the user (cascade) and on `user.deleted`."""

    __tablename__ = "profile_avatars"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    image: Mapped[bytes] = mapped_column(LargeBinary)
    etag: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
