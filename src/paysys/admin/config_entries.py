"""System configuration as the admin API sees it: entries, validated all-or-nothing changes,
`config.updated`. Runs in the caller's transaction and never commits (`admin.service` does)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.core import sysconfig
from paysys.core.errors import AppError, NotFound
from paysys.core.events.outbox import emit
from paysys.core.sysconfig import KEYS, ConfigValueError, SystemConfig, spec
from paysys.core.timefmt import iso_z

# Serialises config writers so cross-key rules (min ≤ max) hold under concurrent PUTs.
_CONFIG_LOCK_ID = 0x5A_C0_F1_6


def _entry(key: str, row: SystemConfig | None) -> dict[str, Any]:
    item = spec(key)
    assert item is not None
    return {
        "key": key,
        "value": row.value if row is not None else item.default,
        "defaultValue": item.default,
        "description": item.description,
        "isDefault": row is None,
        "updatedAt": iso_z(row.updated_at) if row is not None else None,
        "updatedBy": str(row.updated_by) if row is not None and row.updated_by else None,
    }


async def list_entries(session: AsyncSession) -> list[dict[str, Any]]:
    """Every fixed key, and the per-currency limit keys that are set (there are two for each
    of ~170 currencies: listing the unset ones would drown the rest)."""
    rows = {row.key: row for row in (await session.scalars(select(SystemConfig))).all()}
    keys = set(KEYS) | {key for key in rows if spec(key) is not None}
    return [_entry(key, rows.get(key)) for key in sorted(keys)]


def require_key(key: str) -> None:
    if spec(key) is None:
        raise NotFound("CONFIG_KEY_NOT_FOUND", f"Unknown configuration key: {key}")


async def get_entry(session: AsyncSession, key: str) -> dict[str, Any]:
    require_key(key)
    row = await session.get(SystemConfig, key)
    return _entry(key, row)


def _invalid(problems: list[tuple[str, str]]) -> AppError:
    details = [{"field": field, "message": message} for field, message in problems]
    first = details[0]
    return AppError("VALIDATION_ERROR", f"{first['field']}: {first['message']}", details=details)


async def apply(session: AsyncSession, changes: dict[str, Any], actor_id: uuid.UUID) -> None:
    """Validate every change, write all of them or raise, emit one `config.updated` per changed
    key. Takes a transaction-level advisory lock: concurrent writers serialise until commit."""
    problems: list[tuple[str, str]] = []
    canonical: dict[str, Any] = {}
    for key, raw in changes.items():
        if spec(key) is None:
            problems.append((key, sysconfig.unknown_key_message(key)))
            continue
        try:
            canonical[key] = sysconfig.validate(key, raw)
        except ConfigValueError as exc:
            problems.append((key, str(exc)))
    if problems:
        raise _invalid(problems)
    if not canonical:
        raise _invalid([("body", "must name at least one configuration key")])

    await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _CONFIG_LOCK_ID})
    current = await sysconfig.get_values(session)
    proposed = {**current, **canonical}  # a per-currency key set to None: unset
    broken = sysconfig.check_consistency(proposed)
    if broken is not None:
        raise _invalid([broken])
    for key, value in canonical.items():
        old = current.get(key)
        if old == value:
            continue  # nothing changes: no write, no event
        if value is None:  # a per-currency limit unset: back to its default (none)
            await session.execute(delete(SystemConfig).where(SystemConfig.key == key))
        else:
            await session.execute(
                insert(SystemConfig)
                .values(key=key, value=value, updated_by=actor_id)
                .on_conflict_do_update(
                    index_elements=["key"],
                    set_={"value": value, "updated_by": actor_id, "updated_at": text("now()")},
                )
            )
        await emit(
            session,
            "config.updated",
            {"key": key, "oldValue": old, "newValue": value},
            actor_id=actor_id,
        )


async def entries_of(session: AsyncSession, keys: list[str]) -> list[dict[str, Any]]:
    """The entries of `keys` (known keys, in that order), re-read from the database."""
    rows = {
        row.key: row
        for row in (
            await session.scalars(
                select(SystemConfig)
                .where(SystemConfig.key.in_(keys))
                .execution_options(populate_existing=True)
            )
        ).all()
    }
    return [_entry(key, rows.get(key)) for key in keys]
