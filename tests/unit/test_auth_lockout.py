"""Lockout rules (paysys.auth.lockout): pure, so time is simulated exactly (an injected clock:
every function takes `now` in epoch milliseconds)."""

from __future__ import annotations

import pytest

from paysys.auth.lockout import (
    HOUR_MS,
    AddressState,
    Policy,
    Verdict,
    attempt,
    record_failure,
    window_wait,
)
from paysys.core.config import Settings

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
S = 1000
MIN = 60 * S
POLICY = Policy()


class Account:
    """One account as the stores keep it: a state per client address and the failure log."""

    def __init__(self, policy: Policy = POLICY) -> None:
        self.policy = policy
        self.addresses: dict[str, AddressState] = {}
        self.failures: list[int] = []

    def try_(self, address: str, now: int, *, right: bool = False) -> Verdict:
        verdict, state = attempt(self.addresses.get(address), self.failures, now, self.policy)
        if verdict.allowed:
            assert state is not None
            self.addresses[address] = state
            self.failures.append(now)
            if right:  # a success takes the count back and forgets the address's failures
                self.failures.remove(now)
                del self.addresses[address]
        return verdict

    def fail(self, address: str, now: int, times: int = 1) -> None:
        for _ in range(times):
            assert self.try_(address, now).allowed


def test_five_failures_lock_that_address_for_one_minute() -> None:
    account = Account()
    account.fail("A", T0, 4)
    account.fail("A", T0)  # the 5th is still verified (and answered 401) ...
    locked = account.try_("A", T0, right=True)  # ... then even the right password waits
    assert (locked.allowed, locked.scope, locked.retry_after) == (False, "address", 60)
    assert account.try_("A", T0 + 59_500).retry_after == 1
    # the owner, from another address, is not affected
    assert account.try_("B", T0, right=True).allowed
    assert account.try_("A", T0 + MIN, right=True).allowed


def test_a_success_forgets_that_address_only() -> None:
    account = Account()
    account.fail("A", T0, 4)
    account.fail("B", T0, 4)
    assert account.try_("A", T0, right=True).allowed
    account.fail("A", T0, 4)  # A starts from 0 again: 4 more are fine
    assert account.try_("A", T0).allowed
    assert not account.try_("A", T0).allowed  # now A is locked
    account.fail("B", T0)  # B kept its 4: the 5th locks B
    assert account.try_("B", T0).scope == "address"


def test_failures_outside_fifteen_minutes_do_not_add_up() -> None:
    state = None
    for _ in range(4):
        state = record_failure(state, T0, POLICY)
    state = record_failure(state, T0 + 16 * MIN, POLICY)
    assert state.failures == 1 and state.locked_until == 0


def test_lock_doubles_up_to_fifteen_minutes_and_never_longer() -> None:
    assert [POLICY.lock_duration(n) / MIN for n in range(7)] == [1, 2, 4, 8, 15, 15, 15]
    assert POLICY.lock_duration(10_000) == 15 * MIN  # no overflow however long it goes on
    account, now, waits = Account(), T0, []
    for _ in range(7):
        account.fail("A", now, 5)
        verdict = account.try_("A", now)
        waits.append(verdict.retry_after)
        now += verdict.retry_after_ms
    assert waits == [60, 120, 240, 480, 900, 900, 900]


def test_lock_level_resets_after_fifteen_quiet_minutes() -> None:
    account = Account()
    account.fail("A", T0, 5)  # locked 1 min, level 1
    later = T0 + MIN + POLICY.window_ms + 1
    account.fail("A", later, 5)
    assert account.try_("A", later).retry_after == 60


def test_fastest_attacker_from_one_address_gets_35_per_hour() -> None:
    account, now, tried = Account(), T0, 0
    while now < T0 + HOUR_MS:
        verdict = account.try_("A", now)
        if not verdict.allowed:
            now += verdict.retry_after_ms
            continue
        tried += 1
    assert tried == 35


def test_account_ceiling_across_addresses_is_one_hundred_per_sliding_hour() -> None:
    """Many addresses, each below its own lock: the 101st failure in an hour is refused from
    every address (the owner's too) until the oldest failure is an hour old."""
    account, now = Account(), T0
    verdicts = []
    for i in range(100):
        verdicts.append(account.try_(f"10.0.0.{i // 4}", now))
        now += 10 * S
    assert all(v.allowed for v in verdicts)
    assert [v.crossed_ceiling(POLICY) for v in verdicts].index(True) == 99
    assert verdicts[99].account_failures == 100
    for address in ("10.0.0.1", "192.0.2.77", "owner"):
        refused = account.try_(address, now, right=True)
        assert (refused.allowed, refused.scope) == (False, "account")
        assert refused.account_failures == 100
        # the first failure (at T0) leaves the hour at T0 + 1 h
        assert refused.retry_after_ms == T0 + HOUR_MS - now
    assert account.try_("owner", T0 + HOUR_MS + 1, right=True).allowed
    # sliding, not fixed: one slot came free, the next failure takes it, then refused again
    account.fail("10.9.9.9", T0 + HOUR_MS + 2)
    assert account.try_("10.9.9.8", T0 + HOUR_MS + 3).scope == "account"


def test_refused_attempts_are_not_counted() -> None:
    account = Account()
    account.fail("A", T0, 5)
    for _ in range(50):
        assert not account.try_("A", T0 + S).allowed
    assert len(account.failures) == 5


def test_both_limits_report_the_longer_wait() -> None:
    policy = Policy(account_hourly_max=6)
    account = Account(policy)
    account.fail("A", T0, 5)  # A locked for a minute
    account.fail("B", T0 + S)  # the 6th failure: the account's ceiling, for an hour
    verdict = account.try_("A", T0 + 2 * S)
    assert (verdict.scope, verdict.retry_after_ms) == ("account", HOUR_MS - 2 * S)
    policy = Policy(account_hourly_max=6, base_ms=2 * HOUR_MS, max_ms=2 * HOUR_MS)
    account = Account(policy)
    account.fail("A", T0, 5)
    account.fail("B", T0)
    verdict = account.try_("A", T0)
    assert (verdict.scope, verdict.retry_after_ms) == ("address", 2 * HOUR_MS)


def test_window_wait_is_a_sliding_log() -> None:
    assert window_wait([], T0, 5, 15 * MIN) == 0
    times = [T0 + i * MIN for i in range(5)]
    assert window_wait(times, T0 + 5 * MIN, 5, 15 * MIN) == 10 * MIN
    assert window_wait(times, T0 + 15 * MIN, 5, 15 * MIN) == 0  # the first one has left
    assert window_wait(times, T0 + 5 * MIN, 6, 15 * MIN) == 0


def test_policy_from_settings() -> None:
    assert Policy.from_settings(Settings()) == POLICY
    custom = Policy.from_settings(
        Settings(
            lockout_threshold=3,
            lockout_window="10m",
            lockout_base_duration="30s",
            lockout_max_duration="1h",
            lockout_account_hourly_max=50,
        )
    )
    assert custom == Policy(3, 10 * MIN, 30 * S, HOUR_MS, 50)


@pytest.mark.parametrize("wait_ms, seconds", [(1, 1), (999, 1), (1000, 1), (1001, 2)])
def test_retry_after_rounds_up_to_whole_seconds(wait_ms: int, seconds: int) -> None:
    assert Verdict(False, wait_ms, "address").retry_after == seconds
