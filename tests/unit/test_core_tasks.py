"""`cancel_and_wait`: shutdown finishes even when a task turns its cancellation into an error."""

from __future__ import annotations

import asyncio

from paysys.core.tasks import cancel_and_wait


async def _swallows_first_cancel(rounds: list[int]) -> None:
    """A retry loop around a call whose timeout raced the cancel: the library raised its own
    `TimeoutError` instead of `CancelledError`, and the loop goes on."""
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            rounds.append(1)
            if len(rounds) == 1:
                continue  # what `except TimeoutError: retry` does with a converted cancel
            raise


async def test_a_loop_that_survives_one_cancel_still_stops() -> None:
    rounds: list[int] = []
    task = asyncio.create_task(_swallows_first_cancel(rounds), name="stubborn")
    await asyncio.sleep(0)
    # The old shutdown (cancel once, then gather) would wait here forever.
    task.cancel()
    _done, pending = await asyncio.wait({task}, timeout=0.2)
    assert pending == {task}
    assert await cancel_and_wait([task], wait=0.2) == set()
    assert task.cancelled() and len(rounds) == 2


async def test_a_task_that_never_stops_is_reported_not_awaited_forever() -> None:
    release = asyncio.Event()

    async def immortal() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(immortal(), name="immortal")
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], attempts=3, wait=0.05) == {task}
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.done()


async def test_finished_tasks_and_errors_are_collected() -> None:
    async def fails() -> None:
        await asyncio.sleep(10)

    failing = asyncio.create_task(fails())
    finished = asyncio.create_task(asyncio.sleep(0))
    await finished
    assert await cancel_and_wait([failing, finished], wait=0.1) == set()
    assert failing.cancelled()
