"""The status machine table and query-date helper (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from paysys.core import querydates
from paysys.core.errors import AppError
from paysys.core.timefmt import iso_or_none, iso_z
from paysys.payments import states


def test_table_matches_contract() -> None:
    assert states.TRANSITIONS["pending"] == {"processing", "cancelled", "failed"}
    assert states.TRANSITIONS["processing"] == {"completed", "failed"}
    for terminal in states.TERMINAL:
        assert states.TRANSITIONS[terminal] == frozenset()
    with pytest.raises(AppError) as info:
        states.check_transition("completed", "failed")
    assert info.value.code == "INVALID_STATUS_TRANSITION" and info.value.status == 409


def test_paths() -> None:
    assert states.path("pending", "completed") == ["processing", "completed"]
    assert states.path("pending", "failed") == ["failed"]
    assert states.path("processing", "processing") == []
    assert states.path("completed", "failed") is None
    assert states.path("processing", "cancelled") is None


def test_query_dates() -> None:
    r = querydates.parse_range("2026-01-31", "2026-01-31")
    assert r.start == datetime(2026, 1, 31, tzinfo=UTC)
    assert r.end_exclusive == datetime(2026, 2, 1, tzinfo=UTC)
    assert r.end_inclusive == datetime(2026, 2, 1, tzinfo=UTC) - timedelta(microseconds=1)
    dt = querydates.parse_end("2026-01-31T10:00:00+02:00")
    assert dt == datetime(2026, 1, 31, 8, 0, tzinfo=UTC) + timedelta(microseconds=1)
    assert querydates.parse_start("2026-01-31T10:00:00") == datetime(2026, 1, 31, 10, tzinfo=UTC)
    assert querydates.parse_start("2026-01-31T10:00:00Z").tzinfo is not None
    assert iso_z(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"
    plus_two = timezone(timedelta(hours=2))
    assert iso_z(datetime(2026, 1, 1, 2, 30, tzinfo=plus_two)) == "2026-01-01T00:30:00.000Z"
    assert iso_or_none(None) is None
    assert querydates.parse_range(None, None).start is None
    for bad in ("yesterday", "2026-02-30", "2026-01-01T25:00", "x" * 41, "0001-01-01"):
        with pytest.raises(AppError):
            querydates.parse_start(bad)
    with pytest.raises(AppError, match="must not be after"):
        querydates.parse_range("2026-02-02", "2026-02-01")
