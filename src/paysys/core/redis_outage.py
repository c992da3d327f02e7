"""Skipping Redis for a moment after it failed: one rule for every Redis-first code path.

A dead Redis must not add its connect timeout to every request, so after a failure the caller
uses its fallback (a local count, PostgreSQL) for `retry_after` seconds, then tries Redis
again. The outage is logged once when it starts and once when it ends, not per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from paysys.core.logging import get_logger

log = get_logger(__name__)


class RedisOutage:
    """`usable()` before a Redis call; `failed(exc)` / `succeeded()` after it."""

    RETRY_AFTER = 1.0  # seconds

    def __init__(
        self,
        down_message: str,
        up_message: str,
        *,
        retry_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.down_message = down_message
        self.up_message = up_message
        self.retry_after = self.RETRY_AFTER if retry_after is None else retry_after
        self.clock = clock
        self.down = False
        self._until = 0.0

    def usable(self) -> bool:
        """False while the back-off after a failure runs."""
        return not self.down or self.clock() >= self._until

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            log.warning(self.down_message, error=type(exc).__name__)
        self._until = self.clock() + self.retry_after

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            log.info(self.up_message)

    def retry_now(self) -> None:
        """End the back-off early (the next call tries Redis)."""
        self._until = 0.0
