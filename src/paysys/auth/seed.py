"""Seed users of api-contracts §8 (development and test only; idempotent)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.users import accounts
from paysys.users.models import User

SEED_PASSWORD = "TestPassword123!"
SEED_USERS = (
    ("admin@example.com", "Admin User", "ADMIN"),
    ("customer@example.com", "Customer User", "CUSTOMER"),
    ("vendor@example.com", "Vendor User", "VENDOR"),
)


async def seed(session: AsyncSession) -> None:
    """Creates the three users through the shared domain code (policy, argon2id, events);
    users that already exist are left exactly as they are. One short transaction per user, none
    open while a password is hashed."""
    emails = [email for email, _, _ in SEED_USERS]
    existing = set(
        await session.scalars(
            select(func.lower(User.email)).where(func.lower(User.email).in_(emails))
        )
    )
    await session.commit()
    for email, name, role in SEED_USERS:
        if email in existing:
            continue
        await accounts.create_user(
            session,
            email=email,
            password=SEED_PASSWORD,
            name=name,
            role=role,
            via="admin",
            email_verified=True,
        )
        await session.commit()
