"""Profile reads: Redis cache hits vs misses, on the real service process.

    .venv/bin/python -m bench.profile_cache [--users 1000] [--concurrency 16] [--json]

Uses the PostgreSQL of DATABASE_URL (scratch database `<name>_bench_profile`, migrated, dropped
at the end) and a private redis-server on a free port. Starts the profile service (uvicorn, one
worker, background workers off) and drives `GET /api/profile` with an aiohttp client at fixed
concurrency, each request with its own user's token:

- miss: every user's first read after the cache was emptied (PostgreSQL join + cache fill);
- hit: the same users read again (one Redis MGET, no database).

Reported: requests/s and p50/p99 latency of each phase, and hit ÷ miss throughput. Bounded: two
passes over `--users` requests (a few seconds on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.support import Processes, free_port, private_redis, scratch_database, service_env
from paysys.core.config import Settings
from paysys.core.db import raw_dsn
from paysys.core.tokens import TokenCodec


async def _seed(dsn: str, count: int) -> list[tuple[uuid.UUID, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            INSERT INTO users (id, email, name, role, password_hash)
            SELECT gen_random_uuid(), 'bench-' || n || '@example.com', 'Bench ' || n,
                   'CUSTOMER', 'x'
            FROM generate_series(1, $1) AS n RETURNING id, email
            """,
            count,
        )
        await conn.execute(
            "INSERT INTO profiles (id, user_id, bio) "
            "SELECT gen_random_uuid(), id, 'bench' FROM users"
        )
    finally:
        await conn.close()
    return [(row["id"], row["email"]) for row in rows]


async def _phase(url: str, tokens: list[str], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue: asyncio.Queue[str] = asyncio.Queue()
    for token in tokens:
        queue.put_nowait(token)
    errors = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while not queue.empty():
            token = queue.get_nowait()
            start = time.perf_counter()
            async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


async def _measure(base: str, redis_url: str, tokens: list[str], concurrency: int) -> Any:
    from redis.asyncio import Redis

    url = f"{base}/api/profile"
    await _phase(url, tokens[: concurrency * 10], concurrency)  # warm up connections and pools
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    miss = await _phase(url, tokens, concurrency)
    hit = await _phase(url, tokens, concurrency)
    return miss, hit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="paysys-bench-profile-") as workdir,
        private_redis(Path(workdir)) as redis_url,
        scratch_database("profile") as database_url,
        Processes(Path(workdir)) as procs,
    ):
        settings = Settings(database_url=database_url)
        users = asyncio.run(_seed(raw_dsn(database_url), args.users))
        codec = TokenCodec(settings)
        tokens = [
            codec.issue_access(user_id=uid, email=email, name="B", role="CUSTOMER", sid="bench")[0]
            for uid, email in users
        ]
        port = free_port()
        procs.serve(
            "profile", port, service_env(database_url, redis_url, BACKGROUND_WORKERS="false")
        )
        base = f"http://127.0.0.1:{port}"
        procs.wait_ready("profile", f"{base}/health/ready", 90)
        miss, hit = asyncio.run(_measure(base, redis_url, tokens, args.concurrency))
    result = {
        "users": args.users,
        "concurrency": args.concurrency,
        "miss": miss,
        "hit": hit,
        "hit_over_miss_rps": round(hit["rps"] / miss["rps"], 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"profile GET, {args.users} users, concurrency {args.concurrency}")
    for name in ("miss", "hit"):
        r = result[name]
        print(
            f"  {name:4}: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:6.2f} ms  "
            f"p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}"
        )
    print(f"  hit / miss throughput: {result['hit_over_miss_rps']}x")


if __name__ == "__main__":
    main()
