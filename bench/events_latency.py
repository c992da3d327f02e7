"""Event hub benchmark: emit → handled latency (p50/p99) and events/s through one relay.

    .venv/bin/python -m bench.events_latency [--events 300] [--rate 100] [--backlog 3000]

Uses the PostgreSQL of DATABASE_URL (a scratch database `<name>_bench_events` is created,
migrated to the outbox revision and dropped at the end) and a private redis-server on a free
port (or --redis-url). The relay and the consumer run in ONE separate worker process (like
`paysys worker`); this process emits.

1. latency: `--events` events emitted one per transaction at `--rate` per second; each is
   handled by a consumer whose handler inserts a row stamped with clock_timestamp(); latency =
   that stamp - the event's occurredAt (set inside emit, before the commit).
2. relay throughput: `--backlog` events are written to the outbox while the worker is stopped;
   a worker with only the relay starts and the time until the outbox is empty gives events/s.
3. consumer throughput: then a worker with only the consumer drains the same events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg

from bench.support import private_redis, scratch_database
from paysys.core.config import Settings
from paysys.core.db import raw_dsn

TABLE_SQL = """
CREATE TABLE IF NOT EXISTS bench_applied (
    event_id uuid NOT NULL,
    occurred_at timestamptz NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


# -- the worker process ---------------------------------------------------------------------
async def worker_main(relay: bool, consumer: bool) -> None:
    import signal

    from sqlalchemy import text

    from paysys.core.events.consumer import EventHandlers
    from paysys.core.events.envelope import EventEnvelope
    from paysys.core.events.relay import run_relay
    from paysys.core.runtime import Runtime

    settings = Settings()
    handlers = EventHandlers("bench")

    @handlers.on_any
    async def record(session: Any, event: EventEnvelope) -> None:
        await session.execute(
            text("INSERT INTO bench_applied (event_id, occurred_at) VALUES (:id, :at)"),
            {"id": event.id, "at": event.occurred_at},
        )

    runtime = Runtime.create(settings)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, runtime.stopping.set)
    workers = ([run_relay] if relay else []) + ([handlers.run] if consumer else [])
    runtime.start_workers(workers)
    print("ready", flush=True)
    await runtime.stopping.wait()
    await runtime.close()


# -- the driver -------------------------------------------------------------------------------
class Bench:
    def __init__(self, database_url: str, redis_url: str) -> None:
        self.env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
        self.env.update({"LOG_LEVEL": "WARNING", "EVENTS_RELAY_POLL_MS": "1000"})
        self.settings = Settings(database_url=database_url, redis_url=redis_url)

    def start_worker(self, *, relay: bool, consumer: bool) -> subprocess.Popen[str]:
        args = [sys.executable, "-m", "bench.events_latency", "--worker"]
        args += [] if relay else ["--no-relay"]
        args += [] if consumer else ["--no-consumer"]
        proc = subprocess.Popen(args, env=self.env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"worker did not start: {line!r}")
        return proc

    @staticmethod
    def stop_worker(proc: subprocess.Popen[str]) -> None:
        proc.terminate()
        proc.wait(20)

    async def timed_drain(
        self,
        what: str,
        count: Callable[[], Awaitable[int]],
        target: int,
        *,
        relay: bool,
        consumer: bool,
    ) -> float:
        """Seconds a fresh worker (relay and/or consumer) takes until `count()` reaches `target`."""
        proc = self.start_worker(relay=relay, consumer=consumer)
        start = time.perf_counter()
        try:
            while await count() != target:
                if time.perf_counter() - start > 60:
                    raise RuntimeError(f"{what} run: not drained after 60 s")
                await asyncio.sleep(0.01)
            return time.perf_counter() - start
        finally:
            self.stop_worker(proc)

    async def emit(self, runtime: Any, count: int, per_tx: int = 1) -> None:
        from paysys.core.events.outbox import emit

        for first in range(0, count, per_tx):
            async with runtime.sessionmaker() as session, session.begin():
                for i in range(first, min(first + per_tx, count)):
                    await emit(
                        session,
                        "config.updated",
                        {"key": f"bench.{i}", "oldValue": i, "newValue": i},
                    )

    async def latency(
        self, runtime: Any, conn: asyncpg.Connection, events: int, rate: float
    ) -> dict[str, Any]:
        from paysys.core.events.outbox import emit

        proc = self.start_worker(relay=True, consumer=True)
        try:
            await asyncio.sleep(0.5)  # group created, relay listening
            interval = 1.0 / rate
            start = time.perf_counter()
            for i in range(events):
                async with runtime.sessionmaker() as session, session.begin():
                    await emit(session, "config.updated", {"key": f"lat.{i}", "newValue": i})
                delay = start + (i + 1) * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            deadline = time.monotonic() + 30
            while await conn.fetchval("SELECT count(*) FROM bench_applied") < events:
                if time.monotonic() > deadline:
                    raise RuntimeError("latency run: events missing after 30 s")
                await asyncio.sleep(0.02)
        finally:
            self.stop_worker(proc)
        rows = await conn.fetch(
            "SELECT extract(epoch FROM handled_at - occurred_at) * 1000 AS ms FROM bench_applied"
        )
        ms = sorted(float(r["ms"]) for r in rows)
        dupes = await conn.fetchval("SELECT count(*) - count(DISTINCT event_id) FROM bench_applied")
        # Stages: emit → relay took the row (published_at = the relay transaction's start),
        # and relay → handled.
        stages = await conn.fetchrow(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
            "o.published_at - a.occurred_at)) * 1000 AS relay_ms, "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
            "a.handled_at - o.published_at)) * 1000 AS consumer_ms "
            "FROM bench_applied a JOIN outbox o ON o.id = a.event_id"
        )
        return {
            "stage_p50_emit_to_relay_ms": round(float(stages["relay_ms"]), 2),
            "stage_p50_relay_to_handled_ms": round(float(stages["consumer_ms"]), 2),
            "events": events,
            "rate_per_s": rate,
            "p50_ms": round(statistics.median(ms), 2),
            "p90_ms": round(ms[int(len(ms) * 0.90) - 1], 2),
            "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 2),
            "max_ms": round(ms[-1], 2),
            "duplicates": int(dupes),
        }

    @staticmethod
    async def baseline(conn: asyncpg.Connection, backlog: int) -> dict[str, Any]:
        """The floor, measured side by side: one INSERT + COMMIT (a delivery waits for two
        durable commits, emit and consumer, plus the relay's non-durable one), and the bench
        handler's INSERT done `backlog` times by raw asyncpg in transactions of 100 (the
        consumer's ceiling)."""
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_probe (x int)")
        samples = []
        for _ in range(200):
            start = time.perf_counter()
            async with conn.transaction():
                await conn.execute("INSERT INTO bench_probe VALUES (1)")
            samples.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        for first in range(0, backlog, 100):
            async with conn.transaction():
                for _ in range(first, min(first + 100, backlog)):
                    await conn.execute(
                        "INSERT INTO bench_applied (event_id, occurred_at) "
                        "VALUES (gen_random_uuid(), now())"
                    )
        raw_s = time.perf_counter() - start
        await conn.execute("DROP TABLE bench_probe")
        await conn.execute("TRUNCATE bench_applied")
        return {
            "commit_p50_ms": round(statistics.median(samples), 2),
            "raw_handler_inserts_per_s": round(backlog / raw_s),
        }

    async def throughput(
        self, runtime: Any, conn: asyncpg.Connection, backlog: int
    ) -> dict[str, Any]:
        await conn.execute("TRUNCATE outbox, processed_events, bench_applied")
        from redis.asyncio import Redis

        redis = Redis.from_url(self.settings.redis_url)
        await redis.flushdb()
        await redis.aclose()
        await self.emit(runtime, backlog, per_tx=100)

        unpublished = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        relay_s = await self.timed_drain(
            "relay", lambda: conn.fetchval(unpublished), 0, relay=True, consumer=False
        )
        consumer_s = await self.timed_drain(
            "consumer",
            lambda: conn.fetchval("SELECT count(*) FROM bench_applied"),
            backlog,
            relay=False,
            consumer=True,
        )
        return {
            "backlog": backlog,
            "relay_events_per_s": round(backlog / relay_s),
            "relay_seconds": round(relay_s, 2),
            "consumer_events_per_s": round(backlog / consumer_s),
            "consumer_seconds": round(consumer_s, 2),
        }


async def driver(
    args: argparse.Namespace, database_url: str, redis_url: str, load_start: float
) -> dict[str, Any]:
    from paysys.core.runtime import Runtime

    settings = Settings(database_url=database_url, redis_url=redis_url)
    bench = Bench(database_url, redis_url)
    conn = await asyncpg.connect(raw_dsn(database_url))
    runtime = Runtime.create(settings)
    try:
        await conn.execute(TABLE_SQL)
        baseline = await bench.baseline(conn, args.backlog)
        latency = await bench.latency(runtime, conn, args.events, args.rate)
        throughput = await bench.throughput(runtime, conn, args.backlog)
        throughput["consumer_vs_raw_inserts"] = round(
            throughput["consumer_events_per_s"] / baseline["raw_handler_inserts_per_s"], 2
        )
    finally:
        await runtime.close()
        await conn.close()
    return {
        "load_average_1m_at_start": load_start,
        "baseline": baseline,
        "latency": latency,
        "throughput": throughput,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.events_latency")
    parser.add_argument("--events", type=int, default=300, help="latency run: events")
    parser.add_argument("--rate", type=float, default=100.0, help="latency run: events/s")
    parser.add_argument("--backlog", type=int, default=3000, help="throughput run: events")
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-relay", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-consumer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    if args.worker:
        asyncio.run(worker_main(relay=not args.no_relay, consumer=not args.no_consumer))
        return
    load_start = round(os.getloadavg()[0], 2)
    with ExitStack() as stack:
        redis_url = args.redis_url
        if redis_url is None:
            if shutil.which("redis-server") is None:
                raise SystemExit("no redis-server binary: pass --redis-url")
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="paysys-bench-redis-"))
            redis_url = stack.enter_context(private_redis(Path(workdir)))
        database_url = stack.enter_context(scratch_database("events", "0001_foundation"))
        result = asyncio.run(driver(args, database_url, redis_url, load_start))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
