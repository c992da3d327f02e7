"""Runtime.close: the graceful stop every service and `paysys worker` use on SIGTERM."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from paysys.core.config import Settings
from paysys.core.runtime import SHUTDOWN_GRACE_SECONDS, Runtime


class FakeResource:
    def __init__(self, fail: bool = False) -> None:
        self.closed = 0
        self.fail = fail

    async def aclose(self) -> None:
        self.closed += 1
        if self.fail:
            raise ConnectionError("already gone")

    async def dispose(self) -> None:
        await self.aclose()


def make_runtime(fail: bool = False) -> tuple[Runtime, FakeResource, FakeResource]:
    redis, engine = FakeResource(fail), FakeResource(fail)
    runtime = Runtime(Settings(), cast(Any, engine), cast(Any, None), cast(Any, redis))
    return runtime, redis, engine


async def test_workers_hand_back_their_work_and_return_within_the_grace() -> None:
    runtime, redis, engine = make_runtime()
    handed_back: list[str] = []

    async def processor(rt: Runtime) -> None:
        while not await rt.sleep(0.01):
            pass
        await asyncio.sleep(0.05)  # e.g. finishing the current batch's transaction
        handed_back.append("processor")

    runtime.start_workers([processor])
    await asyncio.sleep(0.03)
    await runtime.close(grace=2)
    assert handed_back == ["processor"]
    assert all(task.done() and not task.cancelled() for task in runtime.tasks)
    assert (redis.closed, engine.closed) == (1, 1)


async def test_a_worker_ignoring_stopping_is_cancelled_after_the_grace() -> None:
    runtime, redis, engine = make_runtime()
    cleaned: list[str] = []

    async def stubborn(rt: Runtime) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append("rolled back")  # a cancelled transaction rolls back here

    runtime.start_workers([stubborn])
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await runtime.close(grace=0.2)
    assert 0.2 <= loop.time() - started < 1.5
    assert cleaned == ["rolled back"]
    assert runtime.tasks[0].cancelled()
    assert (redis.closed, engine.closed) == (1, 1)


async def test_close_is_idempotent_and_survives_dead_connections() -> None:
    runtime, redis, engine = make_runtime(fail=True)
    await runtime.close(grace=0.1)
    await runtime.close(grace=0.1)
    assert runtime.stopping.is_set()
    assert (redis.closed, engine.closed) == (1, 1)


async def test_a_crashed_worker_is_restarted_until_stopping() -> None:
    runtime, _redis, _engine = make_runtime()
    runs: list[int] = []

    async def flaky(rt: Runtime) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("boom")
        await rt.stopping.wait()

    runtime.start_workers([flaky])
    for _ in range(300):
        if len(runs) >= 2:
            break
        await asyncio.sleep(0.01)
    assert len(runs) == 2  # restarted after the 1 s pause
    await runtime.close(grace=1)
    assert not runtime.tasks[0].cancelled()


def test_the_grace_fits_the_orchestrators_budget() -> None:
    from paysys.gateway.realtime.service import DRAIN_TIMEOUT

    # uvicorn drain (10 s) + worker grace + preStop (5 s) + the gateway's real-time drain
    # < terminationGracePeriodSeconds (30 s)
    assert 10 + SHUTDOWN_GRACE_SECONDS + 5 + DRAIN_TIMEOUT < 30


async def test_server_shutdown_stops_background_intake_of_every_live_runtime() -> None:
    from paysys.core import runtime as runtime_module

    runtime, _redis, _engine = make_runtime()
    runtime_module._LIVE[id(runtime)] = runtime
    try:
        runtime_module.stop_background_work()
        assert runtime.stopping.is_set()
    finally:
        runtime_module._LIVE.pop(id(runtime), None)
    await runtime.close(grace=0.1)


async def test_the_draining_server_stops_workers_before_uvicorn_drains() -> None:
    import uvicorn

    from paysys.cli.serve import DrainingServer
    from paysys.core import runtime as runtime_module

    runtime, _redis, _engine = make_runtime()
    runtime_module._LIVE[id(runtime)] = runtime
    server = DrainingServer(uvicorn.Config("paysys.profile.app:create_app", factory=True))
    seen: list[bool] = []

    async def fake_super_shutdown(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        seen.append(runtime.stopping.is_set())

    original = uvicorn.Server.shutdown
    uvicorn.Server.shutdown = fake_super_shutdown  # type: ignore[method-assign]
    try:
        await server.shutdown()
    finally:
        uvicorn.Server.shutdown = original  # type: ignore[method-assign]
        runtime_module._LIVE.pop(id(runtime), None)
    assert seen == [True]
    await runtime.close(grace=0.1)


async def test_drains_run_when_shutdown_begins_before_uvicorn_closes_connections() -> None:
    import uvicorn

    from paysys.cli.serve import DrainingServer
    from paysys.core.runtime import drain_connections, on_shutdown_drain

    order: list[str] = []

    async def drain() -> None:
        order.append("drain")

    async def broken() -> None:
        raise RuntimeError("a failing drain must not stop the shutdown")

    unregister = on_shutdown_drain(drain)
    unregister_broken = on_shutdown_drain(broken)
    server = DrainingServer(uvicorn.Config("paysys.profile.app:create_app", factory=True))

    async def fake_super_shutdown(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        order.append("uvicorn")

    original = uvicorn.Server.shutdown
    uvicorn.Server.shutdown = fake_super_shutdown  # type: ignore[method-assign]
    try:
        await server.shutdown()
    finally:
        uvicorn.Server.shutdown = original  # type: ignore[method-assign]
        unregister()
        unregister_broken()
    assert order == ["drain", "uvicorn"]
    unregister()  # twice: harmless
    await drain_connections()
    assert order == ["drain", "uvicorn"]  # unregistered: not run again
