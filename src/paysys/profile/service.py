"""Profile rules: creation (idempotent), updates with `null` to clear, preferences with defaults
and deep merge, erasure on user deletion. Owns the transaction and writes `profile.updated` into
the outbox inside it; the Redis copy is invalidated after the commit."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.core.errors import NotFound
from paysys.core.events.outbox import emit
from paysys.core.timefmt import iso_z
from paysys.profile.cache import ProfileCache
from paysys.profile.models import Profile
from paysys.profile.schemas import DEFAULT_PREFERENCES, PreferencesUpdate, ProfileUpdate
from paysys.users.models import User

PERSONAL_FIELDS = ("phone_number", "address", "avatar_url", "bio")
WIRE_NAMES = {
    "phone_number": "phoneNumber",
    "address": "address",
    "avatar_url": "avatarUrl",
    "bio": "bio",
}


def merge_preferences(stored: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults of §6 overlaid with what the user chose (notifications merged key by key)."""
    merged = copy.deepcopy(DEFAULT_PREFERENCES)
    for key, value in (stored or {}).items():
        if key == "notifications" and isinstance(value, dict):
            for channel, enabled in value.items():
                if channel in merged["notifications"]:
                    merged["notifications"][channel] = enabled
        elif key in merged:
            merged[key] = value
    return merged


def apply_patch(stored: dict[str, Any] | None, patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge a sparse patch into the stored overrides; None removes an override."""
    result = copy.deepcopy(stored or {})
    for key, value in patch.items():
        if key == "notifications" and isinstance(value, dict):
            channels = dict(result.get("notifications") or {})
            for channel, enabled in value.items():
                if enabled is None:
                    channels.pop(channel, None)
                else:
                    channels[channel] = enabled
            if channels:
                result["notifications"] = channels
            else:
                result.pop("notifications", None)
        elif value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def field_changes(values: dict[str, Any]) -> dict[str, dict[str, bool]]:
    """The `changes` of `profile.updated` for personal fields: set or cleared, never the values
    (personal data must not outlive erasure in the audit trail)."""
    return {WIRE_NAMES[name]: {"cleared": values[name] is None} for name in sorted(values)}


def changed_paths(
    before: dict[str, Any], after: dict[str, Any], prefix: str = ""
) -> dict[str, dict[str, Any]]:
    """`{"preferences.notifications.sms": {"old": False, "new": True}, ...}` (leaves only)."""
    paths: dict[str, dict[str, Any]] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            paths.update(changed_paths(old, new, f"{prefix}{key}."))
        elif old != new:
            paths[f"{prefix}{key}"] = {"old": old, "new": new}
    return paths


_PROFILE_COLUMNS = (
    Profile.id,
    Profile.user_id,
    Profile.phone_number,
    Profile.address,
    Profile.avatar_url,
    Profile.bio,
    Profile.preferences,
    Profile.created_at,
    Profile.updated_at,
)
_COLUMNS = (*_PROFILE_COLUMNS, User.email, User.name, User.role)


def with_aliases(profile: dict[str, Any]) -> dict[str, Any]:
    """§6: `phone` (= `phoneNumber`, read-only, what the reference UI reads) right after
    `phoneNumber`. Recomputed on every read, cached copies included (one cached by a version
    without the alias gets it too)."""
    shaped: dict[str, Any] = {}
    for key, value in profile.items():
        if key != "phone":
            shaped[key] = value
        if key == "phoneNumber":
            shaped["phone"] = value
    return shaped


def profile_json(row: Row[Any]) -> dict[str, Any]:
    """The §6 profile without its `user` (preferences with the defaults filled in)."""
    profile = {
        "id": str(row.id),
        "userId": str(row.user_id),
        "phoneNumber": row.phone_number,
        "address": row.address,
        "avatarUrl": row.avatar_url,
        "bio": row.bio,
        "preferences": merge_preferences(row.preferences),
        "createdAt": iso_z(row.created_at),
        "updatedAt": iso_z(row.updated_at),
    }
    return with_aliases(profile)


def to_json(row: Row[Any]) -> dict[str, Any]:
    user = {"id": str(row.user_id), "email": row.email, "name": row.name, "role": row.role}
    return {**profile_json(row), "user": user}


async def _load(session: AsyncSession, user_id: uuid.UUID, *, lock: bool = False) -> Row[Any]:
    stmt = (
        select(*_COLUMNS).join(User, User.id == Profile.user_id).where(Profile.user_id == user_id)
    )
    if lock:
        stmt = stmt.with_for_update(of=Profile)
    row = (await session.execute(stmt)).first()
    if row is None:
        raise NotFound("USER_NOT_FOUND", "User not found")
    return row


async def ensure_profile(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """Create the user's profile unless it exists (no commit). True when this call created it.

    `INSERT ... SELECT FROM users ... ON CONFLICT DO NOTHING`: concurrent callers (the
    `user.created` consumer, first GETs) create exactly one row, and a missing user creates none.
    """
    stmt = (
        insert(Profile)
        .from_select(
            ["id", "user_id"],
            select(func.gen_random_uuid(), User.id).where(User.id == user_id),
        )
        .on_conflict_do_nothing(index_elements=[Profile.user_id])
        .returning(Profile.id)
    )
    return (await session.execute(stmt)).first() is not None


async def _read_through(
    session: AsyncSession, cache: ProfileCache, user_id: uuid.UUID
) -> dict[str, Any]:
    cached, generation = await cache.get(user_id)
    if cached is not None:
        return with_aliases(cached)
    stmt = (
        select(*_COLUMNS).join(User, User.id == Profile.user_id).where(Profile.user_id == user_id)
    )
    row = (await session.execute(stmt)).first()
    if row is None:  # the user.created event has not arrived yet
        await ensure_profile(session, user_id)
        await session.commit()
        row = await _load(session, user_id)
    else:
        await session.rollback()  # end the read-only transaction before talking to Redis
    profile = to_json(row)
    if generation is not None:
        await cache.put(user_id, profile, generation)
    return profile


async def get_profile(session: AsyncSession, redis: Redis, user_id: uuid.UUID) -> dict[str, Any]:
    return await _read_through(session, ProfileCache(redis), user_id)


async def get_preferences(
    session: AsyncSession, redis: Redis, user_id: uuid.UUID
) -> dict[str, Any]:
    profile = await _read_through(session, ProfileCache(redis), user_id)
    preferences: dict[str, Any] = profile["preferences"]
    return preferences


async def find_profile(session: AsyncSession, user_id: uuid.UUID) -> dict[str, Any] | None:
    """The stored profile as `profile_json` shapes it, or None while it does not exist. Reads
    only (no creation, no cache, no commit): for other services' views of a user (admin)."""
    stmt = select(*_PROFILE_COLUMNS).where(Profile.user_id == user_id)
    row = (await session.execute(stmt)).first()
    return None if row is None else profile_json(row)


async def _locked(session: AsyncSession, user_id: uuid.UUID) -> Row[Any]:
    await ensure_profile(session, user_id)
    return await _load(session, user_id, lock=True)


async def update_profile(
    session: AsyncSession, redis: Redis, user_id: uuid.UUID, body: ProfileUpdate
) -> dict[str, Any]:
    row = await _locked(session, user_id)
    values = {name: value for name, value in body.changes().items() if getattr(row, name) != value}
    if not values:
        await session.commit()
        return to_json(row)
    await session.execute(
        update(Profile).where(Profile.user_id == user_id).values(**values, updated_at=func.now())
    )
    await emit(
        session,
        "profile.updated",
        {
            "userId": str(user_id),
            "changes": field_changes(values),
        },
        actor_id=user_id,
    )
    row = await _load(session, user_id)
    await session.commit()
    await ProfileCache(redis).invalidate(user_id)
    return to_json(row)


async def update_preferences(
    session: AsyncSession, redis: Redis, user_id: uuid.UUID, body: PreferencesUpdate
) -> dict[str, Any]:
    row = await _locked(session, user_id)
    stored = apply_patch(row.preferences, body.patch())
    before, after = merge_preferences(row.preferences), merge_preferences(stored)
    changes = changed_paths(before, after, "preferences.")
    if stored == (row.preferences or {}):
        await session.commit()
        return after
    await session.execute(
        update(Profile)
        .where(Profile.user_id == user_id)
        .values(preferences=stored, updated_at=func.now())
    )
    if changes:  # only the stored form changed (e.g. a default written explicitly): no event
        await emit(
            session,
            "profile.updated",
            {"userId": str(user_id), "changes": changes},
            actor_id=user_id,
        )
    await session.commit()
    await ProfileCache(redis).invalidate(user_id)
    return after


async def remove_personal_data(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """Erase phone, address, avatar, bio and preferences of a deleted user (no commit).
    Works before the profile exists too (a late `user.created` then changes nothing)."""
    await ensure_profile(session, user_id)
    result = await session.execute(
        update(Profile)
        .where(Profile.user_id == user_id)
        .values(
            **dict.fromkeys(PERSONAL_FIELDS),
            preferences={},
            personal_data_removed_at=func.now(),
            updated_at=func.now(),
        )
        .returning(Profile.id)
    )
    return result.first() is not None
