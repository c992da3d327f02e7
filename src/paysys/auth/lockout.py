"""Failed-login lockout (api-contracts §3, ASVS V2.2.1): pure rules on epoch milliseconds, no I/O.

Two counters, both checked before a password is verified:

- **Per account and client address** (the address's `client_key`: IPv4 as is, IPv6 per /64).
  5 failures within 15 minutes lock the account *for that address*: 1 minute, doubling with each
  further lock (2, 4, 8) up to 15 minutes. While locked, attempts from that address answer 423
  and are neither verified nor counted (the right password does not open a lock early). After a
  lock ends another 5 failures are needed; the lock level falls back to 0 after 15 quiet minutes
  (no failure, no lock); a success from that address forgets its state. A stranger's guesses
  therefore never lock the owner out from another address.
- **Per account, across all addresses**: at most 100 failures in any hour (a sliding window).
  Past that, attempts from every address answer 423 until the oldest failure of the hour is an
  hour old. This is the ceiling a distributed attacker meets; it logs
  `auth.account_under_attack` once per crossing (`paysys.auth.throttle`).

An attempt is counted *before* its password is verified, as a failure, and the count is taken
back on success; so parallel guesses cannot outrun the limit (at most `threshold` are verified
per address and lock). `paysys.auth.throttle` runs these rules atomically: the same steps as a
Lua script in Redis, and through this module in PostgreSQL while Redis is down. Times are the
auth process's clock; a few seconds of skew between replicas only shifts when a lock ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from paysys.core.config import Settings

HOUR_MS = 3_600_000
_MAX_DOUBLINGS = 30  # 2**30 minutes is far past any sane maximum; keeps the numbers finite


@dataclass(frozen=True, slots=True)
class Policy:
    """The lockout's numbers (settings `LOCKOUT_*`; the defaults are the contract's)."""

    threshold: int = 5
    window_ms: int = 15 * 60_000
    base_ms: int = 60_000
    max_ms: int = 15 * 60_000
    account_hourly_max: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        from paysys.core.config import parse_duration

        def ms(value: str) -> int:
            return int(parse_duration(value).total_seconds() * 1000)

        return cls(
            threshold=settings.lockout_threshold,
            window_ms=ms(settings.lockout_window),
            base_ms=ms(settings.lockout_base_duration),
            max_ms=ms(settings.lockout_max_duration),
            account_hourly_max=settings.lockout_account_hourly_max,
        )

    def lock_duration(self, level: int) -> int:
        """Level 0 → 1 min, 1 → 2, 2 → 4, 3 → 8, then 15 min (with the defaults)."""
        return int(min(self.base_ms * 2 ** min(level, _MAX_DOUBLINGS), self.max_ms))


@dataclass(slots=True)
class AddressState:
    """One account's failures from one client address."""

    window_start: int
    failures: int
    lock_level: int
    locked_until: int  # 0: never locked
    last_failure: int


Scope = Literal["address", "account"]


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_ms: int = 0  # > 0 when refused
    scope: Scope | None = None  # what refused: the address's lock or the account's ceiling
    account_failures: int = 0  # the account's failures this hour, this attempt included

    @property
    def retry_after(self) -> int:
        """Whole seconds (at least 1) for `Retry-After` and `details.retryAfter`."""
        return max(1, math.ceil(self.retry_after_ms / 1000))

    def crossed_ceiling(self, policy: Policy) -> bool:
        """This attempt is the one that reached the per-account ceiling (if it fails)."""
        return self.allowed and self.account_failures == policy.account_hourly_max


def window_wait(times: Sequence[int], now: int, limit: int, window_ms: int) -> int:
    """A sliding-window log: ms until one more event fits (0: it fits now). `times` are the
    events' instants; those older than the window no longer count."""
    recent = [t for t in times if t > now - window_ms]
    if len(recent) < limit:
        return 0
    return min(recent) + window_ms - now


def record_failure(state: AddressState | None, now: int, policy: Policy) -> AddressState:
    """The address's state after one more (allowed) failed attempt at `now`."""
    if state is None:
        state = AddressState(now, 0, 0, 0, now)
    else:
        state = AddressState(
            state.window_start,
            state.failures,
            state.lock_level,
            state.locked_until,
            state.last_failure,
        )
    if now - max(state.last_failure, state.locked_until) > policy.window_ms:
        state.lock_level = 0  # 15 quiet minutes
    if now - state.window_start > policy.window_ms:
        state.window_start, state.failures = now, 0
    state.failures += 1
    state.last_failure = now
    if state.failures >= policy.threshold:
        state.locked_until = now + policy.lock_duration(state.lock_level)
        state.lock_level += 1
        state.failures = 0
        state.window_start = now
    return state


def attempt(
    state: AddressState | None, account_failures: Sequence[int], now: int, policy: Policy
) -> tuple[Verdict, AddressState | None]:
    """Decide an attempt and count it as a failure if allowed: (verdict, the address's new
    state; None when refused, as a refused attempt changes nothing)."""
    recent = [t for t in account_failures if t > now - HOUR_MS]
    account_wait = window_wait(recent, now, policy.account_hourly_max, HOUR_MS)
    address_wait = max(0, state.locked_until - now) if state is not None else 0
    if account_wait > 0 or address_wait > 0:
        scope: Scope = "account" if account_wait >= address_wait else "address"
        return Verdict(False, max(account_wait, address_wait), scope, len(recent)), None
    return Verdict(True, account_failures=len(recent) + 1), record_failure(state, now, policy)
