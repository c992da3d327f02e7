"""Failed-login lockout (api-contracts §3, ASVS V2.2.1): pure rules, no I/O.

- 5 failures for one account (lower-cased email, known or not) within 15 minutes lock it;
  the lock lasts 1 minute, doubling with each further lock (2, 4, 8) up to 15 minutes.
- While locked, every attempt answers 423 `ACCOUNT_LOCKED` with `details.retryAfter` (seconds)
  and is not checked (nor counted): the right password does not open a locked account early.
- After a lock ends the count starts again at 0 (another 5 failures are needed); the lock level
  falls back to 0 after 15 quiet minutes (no failure and no lock), and a success resets all.
- Never more than 100 failures per account per hour: with the schedule above at most
  5 x 7 = 35 fit in an hour; the hourly cap is enforced anyway, as a second line.
- A lock never lasts longer than 15 minutes (the hourly cap at most until its hour ends),
  so an attacker can delay, never lock out a user forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

THRESHOLD = 5
WINDOW = timedelta(minutes=15)
BASE_LOCK = timedelta(minutes=1)
MAX_LOCK = timedelta(minutes=15)
QUIET_RESET = timedelta(minutes=15)
HOURLY_CAP = 100
HOUR = timedelta(hours=1)


@dataclass
class ThrottleState:
    window_start: datetime
    failures: int
    lock_level: int
    locked_until: datetime | None
    hour_start: datetime
    hour_failures: int
    last_failure_at: datetime


def lock_duration(level: int) -> timedelta:
    """Level 0 → 1 min, 1 → 2, 2 → 4, 3 → 8, then 15 min."""
    return min(BASE_LOCK * (2 ** min(level, 10)), MAX_LOCK)


def retry_after(state: ThrottleState | None, now: datetime) -> int | None:
    """Seconds until an attempt may be made again; None when one may be made now."""
    if state is None:
        return None
    waits = []
    if state.locked_until is not None and state.locked_until > now:
        waits.append(state.locked_until - now)
    if state.hour_failures >= HOURLY_CAP and now < state.hour_start + HOUR:
        waits.append(state.hour_start + HOUR - now)
    if not waits:
        return None
    return max(1, math.ceil(max(waits).total_seconds()))


def record_failure(state: ThrottleState | None, now: datetime) -> ThrottleState:
    """The state after one more failed attempt at `now` (which was allowed)."""
    if state is None:
        state = ThrottleState(now, 0, 0, None, now, 0, now)
    last_activity = max(state.last_failure_at, state.locked_until or state.last_failure_at)
    if now - last_activity > QUIET_RESET:
        state.lock_level = 0
    if now - state.window_start > WINDOW:
        state.window_start, state.failures = now, 0
    if now - state.hour_start >= HOUR:
        state.hour_start, state.hour_failures = now, 0
    state.failures += 1
    state.hour_failures += 1
    state.last_failure_at = now
    if state.failures >= THRESHOLD:
        state.locked_until = now + lock_duration(state.lock_level)
        state.lock_level += 1
        state.failures = 0
        state.window_start = now
    return state
