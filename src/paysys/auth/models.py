"""Tables owned by the auth service: sessions, the lockout's fallback store, revoked access tokens.

(`users` is `paysys.users.models`: auth and admin share it.)"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from paysys.core.db import Base, TimestampMixin


class AuthSession(TimestampMixin, Base):
    """One login = one session = one refresh-token family (`id` is both `sid` and `fam`).

    Only hashes of refresh tokens are stored: the current one, and the one it replaced (for the
    10 s grace of a retried refresh); any other token of the family presented again is a reuse.
    """

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    refresh_hash: Mapped[str] = mapped_column(Text)
    previous_hash: Mapped[str | None] = mapped_column(Text, default=None)
    # When the current refresh token was issued (epoch ms; also the iat of the pair it came with).
    rotated_at_ms: Mapped[int] = mapped_column(BigInteger)
    previous_jti: Mapped[str | None] = mapped_column(Text, default=None)
    ip: Mapped[str | None] = mapped_column(Text, default=None)
    user_agent: Mapped[str | None] = mapped_column(Text, default=None)
    last_used_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column()
    revoked: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoke_reason: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (
        Index("ix_auth_sessions_user_id", "user_id", "created_at"),
        Index(
            "ix_auth_sessions_revoked_at",
            "revoked_at",
            postgresql_where=text("revoked_at IS NOT NULL"),
        ),
    )


class LoginThrottle(Base):
    """The lockout's PostgreSQL copy (used while Redis is down; `paysys.auth.throttle`): one
    account's failures from one client address (`client_key`), known account or not, so the
    answers never reveal which emails exist. `account` is a hash of the lower-cased email.
    A success from the address deletes its row."""

    __tablename__ = "auth_login_throttle"

    account: Mapped[str] = mapped_column(Text, primary_key=True)
    client: Mapped[str] = mapped_column(Text, primary_key=True)
    window_start: Mapped[datetime] = mapped_column()
    failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    lock_level: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    last_failure_at: Mapped[datetime] = mapped_column()

    __table_args__ = (Index("ix_auth_login_throttle_last_failure_at", "last_failure_at"),)


class AttemptLog(Base):
    """Sliding-window logs kept in PostgreSQL while Redis is down: an account's failed logins
    (`login_failure`, subject = the account hash; the hourly ceiling) and a user's password
    changes (`password_change`, subject = the user id). One row per event, gone after the
    window (the sync worker deletes old rows)."""

    __tablename__ = "auth_attempt_log"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column()

    __table_args__ = (
        CheckConstraint("scope IN ('login_failure', 'password_change')", name="scope"),
        Index("ix_auth_attempt_log_scope_subject_at", "scope", "subject", "at"),
        Index("ix_auth_attempt_log_at", "at"),
    )


class RevokedAccessToken(Base):
    """An access token revoked on its own (logout): its `jti`, kept until it expires.

    Redis holds the same mark for the hot path; this row lets the database fallback refuse the
    token while Redis is down even when its session lives on (a logout that ends another
    session), and lets the sync worker re-publish the mark after Redis lost it."""

    __tablename__ = "auth_revoked_access_tokens"

    jti: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("ix_auth_revoked_access_tokens_revoked_at", "revoked_at"),
        Index("ix_auth_revoked_access_tokens_expires_at", "expires_at"),
    )
