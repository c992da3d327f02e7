"""Stopping background tasks so that shutdown always finishes.

A library can turn a cancellation into its own error: a Redis call whose timeout fires as the
cancel arrives raises `TimeoutError` (Python 3.11's `asyncio.timeout` race), and a loop that
retries on errors then runs on, so a single `cancel()` followed by `gather()` can wait forever
(a gateway teardown in CI hung 300 s this way). Cancelling again, a bounded number of times,
reaches the loop at its next await, where the cancellation does propagate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from paysys.core.logging import get_logger

log = get_logger(__name__)


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, attempts: int = 10, wait: float = 0.5
) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` and wait for them, cancelling again while any still runs (at most
    `attempts` rounds of `wait` seconds). Returns the tasks that would not stop (logged)."""
    pending = {task for task in tasks if not task.done()}
    for _ in range(attempts):
        if not pending:
            break
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=wait)
        for task in done:  # retrieved, so asyncio does not log "exception never retrieved"
            if not task.cancelled():
                task.exception()
    if pending:
        log.error("tasks would not stop", tasks=sorted(t.get_name() for t in pending))
    return pending
