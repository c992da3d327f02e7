"""`GET /api/admin/stats`: users by role/active, payments by status and currency, daily series.

- `users`: accounts not deleted; `active` = not deleted and active.
- `payments`: all payments; `byStatus` lists every status (0 where none); `byCurrency[CUR]`
  = `{count, volume}` where `volume` is the sum of the **completed** payments' amounts (money
  that actually moved), as the currency's decimal string. Amounts are never summed across
  currencies.
- `daily`: one entry per UTC day of the last `days` days (today included, oldest first, zeros
  included): `payments` = payments created that day, `volume` = `{CUR: amount}` of payments
  completed that day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.core.money import format_minor
from paysys.core.timefmt import iso_z
from paysys.core.tokens import ROLES
from paysys.payments.models import Payment
from paysys.payments.states import STATUSES
from paysys.users.models import User


def _utc_day(column: Any) -> Any:
    return cast(func.timezone("UTC", column), Date)


async def _users(session: AsyncSession) -> dict[str, Any]:
    rows = (
        await session.execute(
            select(User.role, User.is_active, func.count())
            .where(User.deleted_at.is_(None))
            .group_by(User.role, User.is_active)
        )
    ).all()
    by_role = dict.fromkeys(ROLES, 0)
    active = 0
    for role, is_active, count in rows:
        by_role[role] = by_role.get(role, 0) + count
        if is_active:
            active += count
    return {"total": sum(by_role.values()), "byRole": by_role, "active": active}


async def _payments(session: AsyncSession) -> dict[str, Any]:
    completed = Payment.status == "completed"
    rows = (
        await session.execute(
            select(
                Payment.status,
                Payment.currency,
                func.count(),
                func.coalesce(func.sum(Payment.amount).filter(completed), 0),
            ).group_by(Payment.status, Payment.currency)
        )
    ).all()
    by_status = dict.fromkeys(STATUSES, 0)
    by_currency: dict[str, dict[str, int]] = {}
    for status, currency, count, volume in rows:
        by_status[status] = by_status.get(status, 0) + count
        slot = by_currency.setdefault(currency, {"count": 0, "volume": 0})
        slot["count"] += count
        slot["volume"] += int(volume)
    return {
        "total": sum(by_status.values()),
        "byStatus": by_status,
        "byCurrency": {
            currency: {"count": slot["count"], "volume": format_minor(slot["volume"], currency)}
            for currency, slot in sorted(by_currency.items())
        },
    }


async def _daily(session: AsyncSession, first: date, last: date) -> list[dict[str, Any]]:
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    created_day = _utc_day(Payment.created_at)
    created = (
        await session.execute(
            select(created_day, func.count())
            .where(Payment.created_at >= start)
            .group_by(created_day)
        )
    ).all()
    completed_day = _utc_day(Payment.completed_at)
    volumes = (
        await session.execute(
            select(completed_day, Payment.currency, func.sum(Payment.amount))
            .where(Payment.status == "completed", Payment.completed_at >= start)
            .group_by(completed_day, Payment.currency)
        )
    ).all()
    counts: dict[date, int] = {row[0]: row[1] for row in created}
    volume_by_day: dict[date, dict[str, str]] = {}
    for day, currency, total in volumes:
        volume_by_day.setdefault(day, {})[currency] = format_minor(int(total), currency)
    series = []
    day = first
    while day <= last:
        series.append(
            {
                "date": day.isoformat(),
                "payments": counts.get(day, 0),
                "volume": dict(sorted(volume_by_day.get(day, {}).items())),
            }
        )
        day += timedelta(days=1)
    return series


async def system_stats(session: AsyncSession, days: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    last = now.date()
    first = last - timedelta(days=days - 1)
    return {
        "period": {
            "days": days,
            "start": iso_z(datetime(first.year, first.month, first.day, tzinfo=UTC)),
            "end": iso_z(now),
        },
        "users": await _users(session),
        "payments": await _payments(session),
        "daily": await _daily(session, first, last),
    }
