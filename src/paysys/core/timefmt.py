"""Timestamps on the wire: ISO-8601 UTC with millisecond precision and `Z` (api-contracts §1.3)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_z(moment: datetime) -> str:
    """`2026-01-01T00:00:00.000Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else iso_z(moment)


def utcnow_iso() -> str:
    return iso_z(datetime.now(UTC))
