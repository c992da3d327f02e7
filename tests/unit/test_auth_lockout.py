"""Lockout rules (paysys.auth.lockout): pure, so time is simulated exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paysys.auth import lockout
from paysys.auth.lockout import ThrottleState, lock_duration, record_failure, retry_after

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _fail(state: ThrottleState | None, at: datetime, times: int = 1) -> ThrottleState:
    for _ in range(times):
        assert retry_after(state, at) is None
        state = record_failure(state, at)
    assert state is not None
    return state


def test_five_failures_lock_for_one_minute() -> None:
    state = _fail(None, T0, 4)
    assert retry_after(state, T0) is None
    state = _fail(state, T0)
    assert retry_after(state, T0) == 60
    assert retry_after(state, T0 + timedelta(seconds=59.5)) == 1
    assert retry_after(state, T0 + timedelta(seconds=60)) is None


def test_failures_outside_fifteen_minutes_do_not_add_up() -> None:
    state = _fail(None, T0, 4)
    state = _fail(state, T0 + timedelta(minutes=16))
    assert retry_after(state, T0 + timedelta(minutes=16)) is None
    assert state.failures == 1


def test_lock_doubles_up_to_fifteen_minutes_and_never_longer() -> None:
    assert [lock_duration(n).total_seconds() / 60 for n in range(7)] == [1, 2, 4, 8, 15, 15, 15]
    now = T0
    state: ThrottleState | None = None
    waits = []
    for _ in range(7):
        state = _fail(state, now, 5)
        wait = retry_after(state, now)
        assert wait is not None
        waits.append(wait)
        now += timedelta(seconds=wait)
    assert waits == [60, 120, 240, 480, 900, 900, 900]


def test_lock_level_resets_after_quiet_period() -> None:
    state = _fail(None, T0, 5)  # locked 1 min, level 1
    later = T0 + timedelta(minutes=1) + lockout.QUIET_RESET + timedelta(seconds=1)
    state = _fail(state, later, 5)
    assert retry_after(state, later) == 60


def test_at_most_one_hundred_failures_per_hour_even_if_locks_were_shorter(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Make locks negligible to show the hourly cap holds on its own.
    monkeypatch.setattr(lockout, "THRESHOLD", 10**6)
    state: ThrottleState | None = None
    now = T0
    tried = 0
    while retry_after(state, now) is None and now < T0 + timedelta(hours=1):
        state = record_failure(state, now)
        tried += 1
        now += timedelta(seconds=1)
    assert tried == 100
    wait = retry_after(state, now)
    assert wait is not None and now + timedelta(seconds=wait) <= T0 + timedelta(hours=1, seconds=1)
    assert retry_after(state, T0 + timedelta(hours=1)) is None


def test_fastest_possible_attacker_gets_far_fewer_than_one_hundred_per_hour() -> None:
    state: ThrottleState | None = None
    now = T0
    tried = 0
    while now < T0 + timedelta(hours=1):
        wait = retry_after(state, now)
        if wait is not None:
            now += timedelta(seconds=wait)
            continue
        state = record_failure(state, now)
        tried += 1
    assert tried <= 100
    assert tried == 35
