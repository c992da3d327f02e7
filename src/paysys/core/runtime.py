"""What a service process holds: settings, DB engine, Redis, and its background workers.

The same Runtime backs a service's ASGI lifespan and `paysys worker <service>`, so background
work (outbox relay, consumers, the payment processor) runs identically in both.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from paysys.core.config import Settings
from paysys.core.db import create_engine, create_sessionmaker
from paysys.core.logging import get_logger
from paysys.core.redis import HotPathRedis, RedisPipe, create_pipe, create_redis, hot_path_client
from paysys.core.tasks import cancel_and_wait

log = get_logger("paysys.runtime")

# A worker loops until `runtime.stopping` is set, then returns (handing back unfinished work).
Worker = Callable[["Runtime"], Awaitable[None]]

# How long `close()` waits for workers to return once `stopping` is set (after uvicorn has
# drained in-flight requests for up to its own `timeout_graceful_shutdown`, 10 s in
# paysys.cli.serve). Both together stay under Kubernetes' terminationGracePeriodSeconds (30 s,
# of which the preStop hook sleeps 5): deploy/k8s, docs/operations.md.
SHUTDOWN_GRACE_SECONDS = 10.0


# The process's live runtimes (normally one), for `stop_background_work`.
_LIVE: weakref.WeakValueDictionary[int, Runtime] = weakref.WeakValueDictionary()


# Called when shutdown begins, before the server closes its connections (the gateway's real-time
# connections close themselves with their own code): `paysys.cli.serve.DrainingServer`.
Drain = Callable[[], Awaitable[None]]
_DRAINS: list[Drain] = []


def on_shutdown_drain(drain: Drain) -> Callable[[], None]:
    """Register `drain` (awaited when shutdown begins); returns its unregistration."""
    _DRAINS.append(drain)
    return lambda: _DRAINS.remove(drain) if drain in _DRAINS else None


async def drain_connections() -> None:
    """Run every registered drain (each bounds its own wait); a failing one is logged."""
    for drain in list(_DRAINS):
        try:
            await drain()
        except Exception:
            log.exception("drain failed")


def stop_background_work() -> None:
    """The server is shutting down: every live runtime's workers stop taking new work now and
    hand back what they hold, while in-flight requests drain (paysys.cli.serve). `close()`
    later waits for them within its grace."""
    for runtime in list(_LIVE.values()):
        runtime.stopping.set()


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    # The services' per-request revocation check (core.security.authenticate); None for
    # rediss:// or unix-socket URLs, where redis-py answers instead.
    pipe: RedisPipe | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _closed: bool = field(default=False, repr=False)

    @property
    def hot_redis(self) -> HotPathRedis:
        """The client for per-request commands: the pipe where it can go, else redis-py."""
        return hot_path_client(self.pipe, self.redis)

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        engine = create_engine(settings)
        runtime = cls(
            settings,
            engine,
            create_sessionmaker(engine),
            create_redis(settings.redis_url),
            create_pipe(settings.redis_url),
        )
        _LIVE[id(runtime)] = runtime
        return runtime

    def start_workers(self, workers: Iterable[Worker]) -> None:
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

    async def close(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Graceful stop: signal the workers, give them `grace` seconds to hand back their
        pending work and return, cancel the stragglers, then close Redis and the DB pool.

        Idempotent, and never raises on the way out (a process must exit even when Redis or
        PostgreSQL are already gone). A cancelled worker's open transaction rolls back, so
        the rows it held (locked, not committed) are simply picked up again by another replica.
        """
        if self._closed:
            return
        self._closed = True
        self.stopping.set()
        cancelled = 0
        if self.tasks:
            log.info("stopping workers", workers=len(self.tasks), grace=grace)
            _done, pending = await asyncio.wait(self.tasks, timeout=grace)
            cancelled = len(pending)
            await cancel_and_wait(pending)
            if cancelled:
                log.warning(
                    "workers cancelled after the grace period",
                    workers=sorted(t.get_name() for t in pending),
                    grace=grace,
                )
        if self.pipe is not None:
            self.pipe.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(Exception):
            await self.engine.dispose()
        log.info("runtime closed", workers=len(self.tasks), cancelled=cancelled)
