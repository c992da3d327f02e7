"""Admin audit trail: how fast events become audit rows, and what the audit list costs.

    .venv/bin/python -m bench.admin_audit [--events 2000] [--rows 100000] [--json]

Uses the PostgreSQL of DATABASE_URL (scratch database `<name>_bench_admin`, migrated, dropped at
the end) and a private redis-server on a free port.

- consume: `--events` events are committed to the outbox while the admin service is down (as
  after an outage); then the admin app starts in-process with its background workers (outbox
  relay + admin consumer) and the clock runs until every event is an audit row (relay → Redis
  Stream → consumer transaction → row): the catch-up rate.
- list: `--rows` audit rows are added with one INSERT ... SELECT, then the admin list query
  (`paysys.admin.audit.list_audit_logs`, page 1 of 10 with its total count) is timed 50 times
  unfiltered, filtered by action and by actor.
Bounded: a few seconds per phase on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench.support import private_redis, scratch_database
from paysys.core.config import Settings
from paysys.core.db import raw_dsn


async def _consume(settings: Settings, events: int) -> dict[str, float]:
    from paysys.admin.app import create_app
    from paysys.core.db import create_engine, create_sessionmaker
    from paysys.core.events.outbox import emit

    engine = create_engine(settings)
    try:
        sessionmaker = create_sessionmaker(engine)
        started = time.perf_counter()
        for start in range(0, events, 500):
            async with sessionmaker() as session:
                for i in range(start, min(start + 500, events)):
                    await emit(
                        session,
                        "config.updated",
                        {"key": "maintenance.message", "oldValue": "", "newValue": f"m{i}"},
                    )
                await session.commit()
        emitted = time.perf_counter() - started
    finally:
        await engine.dispose()

    # The backlog is waiting in the outbox (as after an outage): start the admin service and
    # time relay + stream + consumer + audit inserts until every event is a row.
    app = create_app(settings.model_copy(update={"background_workers": True}))
    conn = await asyncpg.connect(raw_dsn(settings.database_url))
    try:
        started = time.perf_counter()
        async with app.router.lifespan_context(app):
            deadline = time.monotonic() + 120
            while await conn.fetchval("SELECT count(*) FROM audit_logs") < events:
                if time.monotonic() > deadline:
                    raise TimeoutError("audit rows did not arrive in 120 s")
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return {
        "events": events,
        "emit_seconds": round(emitted, 3),
        "drain_seconds": round(elapsed, 3),
        "events_per_second": round(events / elapsed, 1),
    }


async def _list(settings: Settings, rows: int) -> dict[str, Any]:
    from paysys.admin.audit import AuditFilters, list_audit_logs
    from paysys.core.db import create_engine, create_sessionmaker

    actor = uuid.uuid4()
    conn = await asyncpg.connect(raw_dsn(settings.database_url))
    try:
        await conn.execute(
            """
            INSERT INTO audit_logs (id, event_id, event_type, action, actor_id, resource_type,
                                    resource_id, details, created_at)
            SELECT gen_random_uuid(), gen_random_uuid(), 'payment.created',
                   (ARRAY['PAYMENT_CREATED', 'USER_LOGIN', 'USER_UPDATED',
                          'PROFILE_UPDATED'])[1 + g % 4],
                   CASE WHEN g % 50 = 0 THEN $2::uuid ELSE gen_random_uuid() END,
                   'payment', gen_random_uuid()::text, '{"k": 1}'::jsonb,
                   now() - make_interval(secs => g)
            FROM generate_series(1, $1) AS g
            """,
            rows,
            actor,
        )
        await conn.execute("ANALYZE audit_logs")
    finally:
        await conn.close()
    engine = create_engine(settings)
    results: dict[str, Any] = {"rows": rows}
    try:
        sessionmaker = create_sessionmaker(engine)
        cases = {
            "unfiltered": AuditFilters(),
            "action": AuditFilters(action="USER_LOGIN"),
            "actor": AuditFilters(actor_id=actor),
        }
        for name, filters in cases.items():
            timings = []
            for _ in range(50):
                async with sessionmaker() as session:
                    started = time.perf_counter()
                    await list_audit_logs(session, filters, page=1, limit=10)
                    timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            results[name] = {
                "p50_ms": round(statistics.median(timings), 2),
                "p99_ms": round(timings[int(len(timings) * 0.99) - 1], 2),
            }
    finally:
        await engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="paysys-bench-admin-") as workdir,
        private_redis(Path(workdir)) as redis_url,
        scratch_database("admin") as db_url,
    ):
        settings = Settings(
            database_url=db_url,
            redis_url=redis_url,
            log_level="WARNING",
            events_claim_idle_ms=1000,
        )
        os.environ["LOG_LEVEL"] = "WARNING"
        consume = asyncio.run(_consume(settings, args.events))
        listing = asyncio.run(_list(settings, args.rows))
    report = {"consume": consume, "list": listing}
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"consume: backlog of {consume['events']} events -> audit rows in "
        f"{consume['drain_seconds']} s ({consume['events_per_second']} events/s, service start "
        f"included; emitting took {consume['emit_seconds']} s)"
    )
    for name in ("unfiltered", "action", "actor"):
        item = listing[name]
        print(
            f"list ({listing['rows']} rows, {name}): p50 {item['p50_ms']} ms, "
            f"p99 {item['p99_ms']} ms"
        )


if __name__ == "__main__":
    main()
