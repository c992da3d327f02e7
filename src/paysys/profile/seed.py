"""Seed profiles of api-contracts §8 (idempotent: fills only what is still empty)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.core.events.outbox import emit
from paysys.profile.models import Profile
from paysys.profile.service import (
    changed_paths,
    ensure_profile,
    field_changes,
    merge_preferences,
)
from paysys.users.models import User

SEED_PROFILES: dict[str, dict[str, Any]] = {
    "admin@example.com": {
        "phone_number": "+14155550100",
        "address": "1 Market St, San Francisco, CA 94105, US",
        "avatar_url": "https://avatars.example.com/admin.png",
        "bio": "Platform administrator.",
        "preferences": {"theme": "dark"},
    },
    "customer@example.com": {
        "phone_number": "+442071838750",
        "address": "221B Baker St, London NW1 6XE, GB",
        "avatar_url": "https://avatars.example.com/customer.png",
        "bio": "Regular customer.",
        "preferences": {
            "currency": "GBP",
            "timezone": "Europe/London",
            "language": "en-GB",
            "notifications": {"sms": True},
        },
    },
    "vendor@example.com": {
        "phone_number": "+4930901820",
        "address": "Unter den Linden 1, 10117 Berlin, DE",
        "avatar_url": "https://avatars.example.com/vendor.png",
        "bio": "Vendor selling handmade goods.",
        "preferences": {
            "theme": "light",
            "currency": "EUR",
            "timezone": "Europe/Berlin",
            "language": "de-DE",
            "notifications": {"push": True},
        },
    },
}


async def seed(session: AsyncSession) -> None:
    rows = await session.execute(
        select(User.id, func.lower(User.email)).where(
            func.lower(User.email).in_(list(SEED_PROFILES))
        )
    )
    for user_id, email in rows.all():
        await ensure_profile(session, user_id)
        profile = (
            await session.execute(select(Profile).where(Profile.user_id == user_id))
        ).scalar_one()
        if profile.personal_data_removed_at is not None:
            continue
        wanted = SEED_PROFILES[email]
        values: dict[str, Any] = {
            name: value
            for name, value in wanted.items()
            if name != "preferences" and getattr(profile, name) is None
        }
        if not profile.preferences:
            values["preferences"] = wanted["preferences"]
        if values:
            stored_before = dict(profile.preferences or {})  # the UPDATE refreshes `profile`
            await session.execute(
                update(Profile)
                .where(Profile.user_id == user_id)
                .values(**values, updated_at=func.now())
            )
            # The same event a user's own update emits, so the audit log shows the seed too.
            changes: dict[str, Any] = field_changes(
                {name: value for name, value in values.items() if name != "preferences"}
            )
            if "preferences" in values:
                changes.update(
                    changed_paths(
                        merge_preferences(stored_before),
                        merge_preferences(values["preferences"]),
                        "preferences.",
                    )
                )
            await emit(
                session,
                "profile.updated",
                {"userId": str(user_id), "changes": dict(sorted(changes.items()))},
                actor_id=user_id,
                source="profile-service",
            )
