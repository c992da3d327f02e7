"""`RedisOutage`: skip Redis for a moment after a failure, log the outage once each way."""

from __future__ import annotations

import pytest

from paysys.core import redis_outage
from paysys.core.redis_outage import RedisOutage


def test_back_off_after_a_failure_then_try_again(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    logged: list[tuple[str, str]] = []
    monkeypatch.setattr(redis_outage.log, "warning", lambda msg, **_: logged.append(("w", msg)))
    monkeypatch.setattr(redis_outage.log, "info", lambda msg, **_: logged.append(("i", msg)))
    outage = RedisOutage("down", "up", retry_after=1.0, clock=lambda: now[0])
    assert outage.usable() and not outage.down

    outage.failed(ConnectionError())
    assert outage.down and not outage.usable()
    now[0] += 0.5
    outage.failed(ConnectionError())  # still down: no second warning, the back-off restarts
    now[0] += 0.9
    assert not outage.usable()
    now[0] += 0.2
    assert outage.usable()  # time to try Redis again
    outage.succeeded()
    outage.succeeded()
    assert not outage.down and outage.usable()
    assert logged == [("w", "down"), ("i", "up")]


def test_retry_now_ends_the_back_off() -> None:
    outage = RedisOutage("down", "up", clock=lambda: 0.0)
    outage.failed(OSError())
    assert not outage.usable()
    outage.retry_now()
    assert outage.usable() and outage.down
