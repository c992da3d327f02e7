"""Auth benchmark: login throughput vs the raw argon2id hash rate, and /health/live latency
while logins are hammered (the event loop must stay free: hashing runs in threads).

    .venv/bin/python -m bench.auth_login [--seconds 8] [--concurrency 8] [--json]

Uses the PostgreSQL of DATABASE_URL (a scratch database `<name>_bench_auth` is created,
migrated and dropped at the end) and a private redis-server on a free port. The auth service
runs as a real process (`python -m paysys.cli.serve auth`, uvicorn + uvloop, one worker
process, background workers on, like production); this process is the load generator
(aiohttp, loopback only).

1. raw argon2id: `PasswordHasher.verify` of the service's parameters (m=19 MiB, t=2, p=1),
   sequentially (one core) and in as many threads as there are cores (the ceiling a login
   endpoint could reach on this machine if it did nothing but hash); measured before and after
   the load phases and averaged.
2. /health/live idle: one probe every 20 ms for 3 s → p50/p99 without load.
3. login hammer: `--concurrency` clients each logging in as their own user in a loop for
   `--seconds`, while the probe keeps hitting /health/live every 20 ms → logins/s, login
   p50/p99, health p50/p99. Ratio = logins/s ÷ parallel raw verifications/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

from bench.support import Processes, free_port, private_redis, scratch_database, service_env
from paysys.core.config import Settings

PASSWORD = "Bench-Password-123!"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def raw_argon2(seconds: float) -> dict[str, float]:
    from paysys.core.passwords import PASSWORD_HASHER

    stored = PASSWORD_HASHER.hash(PASSWORD)
    threads = os.cpu_count() or 2

    def loop(deadline: float) -> int:
        done = 0
        while time.perf_counter() < deadline:
            PASSWORD_HASHER.verify(stored, PASSWORD)
            done += 1
        return done

    started = time.perf_counter()
    single = loop(started + seconds) / (time.perf_counter() - started)
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        deadline = started + seconds
        total = sum(pool.map(loop, [deadline] * threads))
        parallel = total / (time.perf_counter() - started)
    return {"single_per_s": single, "parallel_per_s": parallel, "threads": threads}


async def probe(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> list[float]:
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            assert response.status == 200
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.02)
    return latencies


async def hammer(
    session: aiohttp.ClientSession, url: str, email: str, stop: asyncio.Event
) -> list[float]:
    latencies = []
    body = {"email": email, "password": PASSWORD}
    while not stop.is_set():
        started = time.perf_counter()
        async with session.post(url, json=body) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"login failed: {response.status}")
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def seed_users(settings: Settings, count: int) -> list[str]:
    from paysys.core.runtime import Runtime
    from paysys.users import accounts

    runtime = Runtime.create(settings)
    emails = [f"bench-{i}@example.com" for i in range(count)]
    try:
        async with runtime.sessionmaker() as session:
            for email in emails:
                await accounts.create_user(
                    session,
                    email=email,
                    password=PASSWORD,
                    name="Bench",
                    role="CUSTOMER",
                    via="admin",
                )
            await session.commit()
    finally:
        await runtime.close()
    return emails


async def measure(base: str, emails: list[str], seconds: float) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = asyncio.Event()
        idle = asyncio.create_task(probe(session, base + "/health/live", stop))
        await asyncio.sleep(3)
        stop.set()
        idle_lat = await idle

        stop = asyncio.Event()
        health = asyncio.create_task(probe(session, base + "/health/live", stop))
        workers = [
            asyncio.create_task(hammer(session, base + "/api/auth/login", email, stop))
            for email in emails
        ]
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        stop.set()
        login_lat = [x for chunk in await asyncio.gather(*workers) for x in chunk]
        elapsed = time.perf_counter() - started
        health_lat = await health
    return {
        "health_idle_p50_ms": pct(idle_lat, 50),
        "health_idle_p99_ms": pct(idle_lat, 99),
        "logins": len(login_lat),
        "logins_per_s": len(login_lat) / elapsed,
        "login_p50_ms": pct(login_lat, 50),
        "login_p99_ms": pct(login_lat, 99),
        "health_load_p50_ms": pct(health_lat, 50),
        "health_load_p99_ms": pct(health_lat, 99),
        "health_load_max_ms": max(health_lat) if health_lat else float("nan"),
        "health_samples": len(health_lat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="paysys-bench-auth-") as workdir,
        private_redis(Path(workdir)) as redis_url,
        scratch_database("auth") as db_url,
        Processes(Path(workdir)) as procs,
    ):
        env = service_env(db_url, redis_url, ENV="test")
        os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "ENV")})
        emails = asyncio.run(seed_users(Settings(), args.concurrency))
        raw = raw_argon2(3.0)
        port = free_port()
        procs.serve("auth", port, env)
        base = f"http://127.0.0.1:{port}"
        procs.wait_ready("auth", f"{base}/health/live", 30)
        result = asyncio.run(measure(base, emails, args.seconds))
        after = raw_argon2(3.0)  # again, with the service idle: the machine is shared
        raw = {key: (raw[key] + after[key]) / 2 for key in ("single_per_s", "parallel_per_s")} | {
            "threads": raw["threads"]
        }
        result.update(
            {
                "raw_argon2_single_per_s": raw["single_per_s"],
                "raw_argon2_parallel_per_s": raw["parallel_per_s"],
                "hash_threads": raw["threads"],
                "ratio_login_vs_raw_parallel": result["logins_per_s"] / raw["parallel_per_s"],
                "concurrency": args.concurrency,
                "seconds": args.seconds,
                "cpus": os.cpu_count(),
            }
        )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {result['cpus']} cpus; argon2 threads: {result['hash_threads']}")
    print(
        f"raw argon2id verify: {result['raw_argon2_single_per_s']:.1f}/s on one core, "
        f"{result['raw_argon2_parallel_per_s']:.1f}/s in {result['hash_threads']} threads"
    )
    print(
        f"login ({args.concurrency} clients, {args.seconds:.0f} s): "
        f"{result['logins_per_s']:.1f}/s, p50 {result['login_p50_ms']:.1f} ms, "
        f"p99 {result['login_p99_ms']:.1f} ms "
        f"→ ratio {result['ratio_login_vs_raw_parallel']:.2f} of the raw parallel hash rate"
    )
    print(
        f"/health/live idle: p50 {result['health_idle_p50_ms']:.2f} ms, "
        f"p99 {result['health_idle_p99_ms']:.2f} ms"
    )
    print(
        f"/health/live under login load: p50 {result['health_load_p50_ms']:.2f} ms, "
        f"p99 {result['health_load_p99_ms']:.2f} ms, max {result['health_load_max_ms']:.2f} ms "
        f"({result['health_samples']} samples)"
    )


if __name__ == "__main__":
    main()
