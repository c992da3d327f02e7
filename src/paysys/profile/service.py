"""Profile rules: creation (idempotent), updates with `null` to clear, preferences with defaults
and deep merge, erasure on user deletion. Owns the transaction and writes `profile.updated` into
the outbox inside it; the Redis copy is invalidated after the commit."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.core.errors import NotFound, ValidationFailed
from paysys.core.events.outbox import emit
from paysys.core.timefmt import iso_z
from paysys.profile import avatars
from paysys.profile.cache import ProfileCache
from paysys.profile.models import Profile, ProfileAvatar
from paysys.profile.schemas import DEFAULT_PREFERENCES, PreferencesUpdate, ProfileUpdate
from paysys.profile.validation import AVATAR_PATH
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


def avatar_path(user_id: uuid.UUID, etag: str) -> str:
    """`avatarUrl` of an uploaded avatar: the public route, versioned so caches see a change."""
    return f"/api/profile/avatar/{user_id}?v={etag}"


async def update_profile(
    session: AsyncSession, redis: Redis, user_id: uuid.UUID, body: ProfileUpdate
) -> dict[str, Any]:
    changes = body.changes()
    sent = changes.get("avatar_url")
    avatar: avatars.Avatar | None = None
    if sent is not None and avatars.is_data_url(sent):
        # Decoding is CPU work in a thread, done before the first query: the session has not
        # taken a connection yet, so no connection waits on the image.
        avatar = await avatars.process(avatars.parse_data_url(sent))
        changes["avatar_url"] = avatar_path(user_id, avatar.etag)
    row = await _locked(session, user_id)
    if sent is not None and AVATAR_PATH.fullmatch(sent) and sent != row.avatar_url:
        # Only the caller's current avatar path comes back unchanged; any other is refused.
        raise ValidationFailed(
            "avatarUrl", "must be an http(s) URL, an image data URL or the current avatar path"
        )
    values = {name: value for name, value in changes.items() if getattr(row, name) != value}
    if not values:
        await session.commit()
        return to_json(row)
    await session.execute(
        update(Profile).where(Profile.user_id == user_id).values(**values, updated_at=func.now())
    )
    if "avatar_url" in values:
        await _store_avatar(session, user_id, avatar)
    event_changes = field_changes(values)
    if avatar is not None and "avatar_url" in values:
        event_changes["avatarUrl"]["uploaded"] = True
    await emit(
        session,
        "profile.updated",
        {"userId": str(user_id), "changes": event_changes},
        actor_id=user_id,
    )
    row = await _load(session, user_id)
    await session.commit()
    await ProfileCache(redis).invalidate(user_id)
    return to_json(row)


async def _store_avatar(
    session: AsyncSession, user_id: uuid.UUID, avatar: avatars.Avatar | None
) -> None:
    """The stored image follows `avatarUrl`: replaced by an upload, gone otherwise (an http(s)
    URL or null must not leave an old upload publicly served)."""
    if avatar is None:
        await session.execute(delete(ProfileAvatar).where(ProfileAvatar.user_id == user_id))
        return
    stmt = insert(ProfileAvatar).values(user_id=user_id, image=avatar.image, etag=avatar.etag)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[ProfileAvatar.user_id],
            set_={
                "image": stmt.excluded.image,
                "etag": stmt.excluded.etag,
                "updated_at": func.now(),
            },
        )
    )


async def find_avatar(session: AsyncSession, user_id: uuid.UUID) -> tuple[bytes, str] | None:
    """(WebP bytes, etag) of a user's uploaded avatar; None without one or once the user is
    deleted (at once: the `user.deleted` consumer removes the row a moment later)."""
    stmt = (
        select(ProfileAvatar.image, ProfileAvatar.etag)
        .join(User, User.id == ProfileAvatar.user_id)
        .where(ProfileAvatar.user_id == user_id, User.deleted_at.is_(None))
    )
    row = (await session.execute(stmt)).first()
    await session.rollback()  # release the connection before the bytes are sent
    return None if row is None else (row.image, row.etag)


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
    """Erase phone, address, avatar (the stored image too), bio and preferences of a deleted
    user (no commit). Works before the profile exists too (a late `user.created` then changes
    nothing)."""
    await ensure_profile(session, user_id)
    await session.execute(delete(ProfileAvatar).where(ProfileAvatar.user_id == user_id))
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
