"""What a service process holds: settings, DB engine, Redis, and its background workers.

The same Runtime backs a service's ASGI lifespan and `paysys worker <service>`, so background
work (outbox relay, consumers, the payment processor) runs identically in both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from paysys.core.config import Settings
from paysys.core.db import create_engine, create_sessionmaker
from paysys.core.logging import get_logger
from paysys.core.redis import create_redis

log = get_logger("paysys.runtime")

# A worker loops until `runtime.stopping` is set, then returns (handing back unfinished work).
Worker = Callable[["Runtime"], Awaitable[None]]


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        engine = create_engine(settings)
        return cls(settings, engine, create_sessionmaker(engine), create_redis(settings.redis_url))

    def start_workers(self, workers: list[Worker]) -> None:
        for worker in workers:
            name = getattr(worker, "__qualname__", repr(worker))
            self.tasks.append(asyncio.create_task(self._supervise(worker), name=name))

    async def _supervise(self, worker: Worker) -> None:
        """Restart a crashed worker after a pause: background work must outlive a bad moment."""
        while not self.stopping.is_set():
            try:
                await worker(self)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "worker crashed; restarting", worker=getattr(worker, "__qualname__", "")
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 1.0)

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when the runtime is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.stopping.is_set()

    async def close(self, grace: float = 10.0) -> None:
        self.stopping.set()
        if self.tasks:
            _done, pending = await asyncio.wait(self.tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.redis.aclose()
        await self.engine.dispose()
