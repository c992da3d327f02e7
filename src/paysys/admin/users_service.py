"""User management for admins: reads here, every write through `paysys.auth.users`."""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.auth.models import User
from paysys.core.errors import NotFound
from paysys.core.timefmt import iso_or_none


def user_json(user: User) -> dict[str, Any]:
    """§3 user JSON (+ `deletedAt`, useful with `includeDeleted=true`)."""
    from paysys.auth import users as domain

    data = dict(domain.user_json(user))
    data["deletedAt"] = iso_or_none(user.deleted_at)
    return data


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class UserFilters:
    role: str | None = None
    is_active: bool | None = None
    search: str | None = None
    include_deleted: bool = False


def _filtered(statement: Any, filters: UserFilters) -> Any:
    if not filters.include_deleted:
        statement = statement.where(User.deleted_at.is_(None))
    if filters.role:
        statement = statement.where(User.role == filters.role)
    if filters.is_active is not None:
        statement = statement.where(User.is_active.is_(filters.is_active))
    if filters.search:
        pattern = f"%{_escape_like(filters.search)}%"
        statement = statement.where(
            or_(User.email.ilike(pattern, escape="\\"), User.name.ilike(pattern, escape="\\"))
        )
    return statement


SORT_COLUMNS = {
    "createdAt": User.created_at,
    "email": User.email,
    "name": User.name,
    "role": User.role,
}


async def list_users(
    session: AsyncSession,
    *,
    page: int,
    limit: int,
    sort: str,
    order: str,
    role: str | None,
    is_active: bool | None,
    search: str | None,
    include_deleted: bool,
) -> tuple[list[dict[str, Any]], int]:
    filters = UserFilters(role, is_active, search, include_deleted)
    total = await session.scalar(_filtered(select(func.count()).select_from(User), filters))
    column: Any = SORT_COLUMNS[sort]
    keys = [column.desc(), User.id.desc()] if order == "desc" else [column.asc(), User.id.asc()]
    statement = (
        _filtered(select(User), filters).order_by(*keys).offset((page - 1) * limit).limit(limit)
    )
    users = (await session.scalars(statement)).all()
    return [user_json(user) for user in users], int(total or 0)


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("USER_NOT_FOUND", "User not found")
    return user


async def profile_of(session: AsyncSession, user: User) -> dict[str, Any] | None:
    """The user's profile (§6 shape without `user`), or None when it does not exist (yet)."""
    try:
        models = importlib.import_module("paysys.profile.models")
    except ImportError:  # pragma: no cover - before the profile service lands
        return None
    profile_model = models.Profile
    profile = await session.scalar(select(profile_model).where(profile_model.user_id == user.id))
    if profile is None:
        return None
    return {
        "id": str(profile.id),
        "userId": str(profile.user_id),
        "phoneNumber": profile.phone_number,
        "address": profile.address,
        "avatarUrl": profile.avatar_url,
        "bio": profile.bio,
        "preferences": _preferences(profile.preferences),
        "createdAt": iso_or_none(profile.created_at),
        "updatedAt": iso_or_none(profile.updated_at),
    }


def _preferences(stored: dict[str, Any] | None) -> dict[str, Any]:
    """Stored preferences merged over the profile service's defaults (when it has them)."""
    try:
        schemas = importlib.import_module("paysys.profile.schemas")
        defaults: dict[str, Any] = dict(schemas.DEFAULT_PREFERENCES)
    except (ImportError, AttributeError):  # pragma: no cover
        defaults = {}
    merged = {**defaults, **(stored or {})}
    if isinstance(defaults.get("notifications"), dict):
        merged["notifications"] = {
            **defaults["notifications"],
            **((stored or {}).get("notifications") or {}),
        }
    return merged


async def payment_stats(session: AsyncSession, user_id: uuid.UUID) -> dict[str, int]:
    """`{sentPayments, receivedPayments}`: counts over the payments table (payments' model)."""
    try:
        models = importlib.import_module("paysys.payments.models")
    except ImportError:  # pragma: no cover - before the payments service lands
        return {"sentPayments": 0, "receivedPayments": 0}
    payment = models.Payment
    sent = await session.scalar(
        select(func.count()).select_from(payment).where(payment.sender_id == user_id)
    )
    received = await session.scalar(
        select(func.count()).select_from(payment).where(payment.recipient_id == user_id)
    )
    return {"sentPayments": int(sent or 0), "receivedPayments": int(received or 0)}


async def user_detail(session: AsyncSession, user_id: uuid.UUID) -> dict[str, Any]:
    user = await get_user(session, user_id)
    data = user_json(user)
    data["profile"] = await profile_of(session, user)
    data["stats"] = await payment_stats(session, user.id)
    return data
