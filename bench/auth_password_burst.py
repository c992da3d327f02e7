"""Auth benchmark: other users' logins while a burst of password changes runs, side by side with
the same logins on a quiet service, in one run (api-contracts §3: a password-change burst must
not starve other users; no connection is held while argon2 runs).

    .venv/bin/python -m bench.auth_password_burst [--seconds 8] [--others 4] [--interval 0.5]
        [--changers 24] [--pool-size 10] [--max-overflow 10] [--json]

Uses the PostgreSQL of DATABASE_URL (a scratch database `<name>_bench_burst` is created,
migrated and dropped at the end) and a private redis-server on a free port. The auth service
runs as a real process (`python -m paysys.cli.serve auth`, one worker process, the pool sizes
given), this process is the load generator (aiohttp, loopback only).

1. quiet: `--others` users each log in every `--interval` seconds (paced, like people: a
   closed loop would measure its own queue), and one client reads `GET /api/auth/me` every
   20 ms, for `--seconds` → login p50/p99, /me p99.
2. burst: the same, while `--changers` other users each change their password in a loop
   (change, sign in with the new password, change back, ...) → the same figures, and changes/s.
   The per-user change quota (PASSWORD_CHANGE_MAX, 5 per 15 min) is lifted for the service under
   test, or each changer would be refused (cheaply) after five changes and there would be no
   burst to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.support import Processes, free_port, private_redis, scratch_database, service_env

PASSWORDS = ("Bench-Password-123!", "Bench-Password-456?")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


async def _post(session: aiohttp.ClientSession, url: str, body: Any, **headers: str) -> Any:
    async with session.post(url, json=body, headers=headers) as response:
        data = await response.json()
        if response.status not in (200, 201):
            raise RuntimeError(f"{url}: {response.status} {data}")
        return data["data"]


async def register(session: aiohttp.ClientSession, base: str, email: str) -> str:
    body = {"email": email, "password": PASSWORDS[0], "name": "Bench"}
    data = await _post(session, base + "/api/auth/register", body)
    return str(data["accessToken"])


async def log_in_loop(
    session: aiohttp.ClientSession, base: str, email: str, interval: float, stop: asyncio.Event
) -> list[float]:
    latencies = []
    body = {"email": email, "password": PASSWORDS[0]}
    while not stop.is_set():
        started = time.perf_counter()
        await _post(session, base + "/api/auth/login", body)
        took = time.perf_counter() - started
        latencies.append(took * 1000)
        await asyncio.sleep(max(0.0, interval - took))
    return latencies


async def read_loop(
    session: aiohttp.ClientSession, base: str, token: str, stop: asyncio.Event
) -> list[float]:
    latencies = []
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(base + "/api/auth/me", headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"/me: {response.status}")
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.02)
    return latencies


async def change_loop(
    session: aiohttp.ClientSession, base: str, email: str, token: str, stop: asyncio.Event
) -> int:
    """Change the password back and forth; a change ends every session, so sign in again."""
    changes, current = 0, 0
    while not stop.is_set():
        new = 1 - current
        body = {"currentPassword": PASSWORDS[current], "newPassword": PASSWORDS[new]}
        await _post(session, base + "/api/auth/password", body, Authorization=f"Bearer {token}")
        changes += 1
        current = new
        login = {"email": email, "password": PASSWORDS[current]}
        token = (await _post(session, base + "/api/auth/login", login))["accessToken"]
    return changes


async def phase(
    session: aiohttp.ClientSession,
    base: str,
    others: list[str],
    reader: str,
    changers: list[tuple[str, str]],
    args: argparse.Namespace,
) -> dict[str, float]:
    stop = asyncio.Event()
    logins = [
        asyncio.create_task(log_in_loop(session, base, email, args.interval, stop))
        for email in others
    ]
    reads = asyncio.create_task(read_loop(session, base, reader, stop))
    burst = [
        asyncio.create_task(change_loop(session, base, email, token, stop))
        for email, token in changers
    ]
    started = time.perf_counter()
    await asyncio.sleep(args.seconds)
    stop.set()
    login_lat = [x for chunk in await asyncio.gather(*logins) for x in chunk]
    read_lat = await reads
    elapsed = time.perf_counter() - started  # before waiting for the changers' last round
    changes = sum(await asyncio.gather(*burst))
    return {
        "logins_per_s": len(login_lat) / elapsed,
        "login_p50_ms": pct(login_lat, 50),
        "login_p99_ms": pct(login_lat, 99),
        "me_p50_ms": pct(read_lat, 50),
        "me_p99_ms": pct(read_lat, 99),
        "changes_per_s": changes / elapsed,
    }


async def measure(base: str, args: argparse.Namespace) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        others = [f"other-{i}@example.com" for i in range(args.others)]
        reader = await register(session, base, "reader@example.com")
        for email in others:
            await register(session, base, email)
        changers = []
        for i in range(args.changers):
            email = f"changer-{i}@example.com"
            changers.append((email, await register(session, base, email)))
        quiet = await phase(session, base, others, reader, [], args)
        burst = await phase(session, base, others, reader, changers, args)
    return {"quiet": quiet, "burst": burst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--others", type=int, default=4, help="users whose logins are measured")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between their logins")
    parser.add_argument("--changers", type=int, default=24, help="users changing passwords")
    parser.add_argument("--pool-size", type=int, default=10, help="DB_POOL_SIZE of the service")
    parser.add_argument("--max-overflow", type=int, default=10, help="DB_MAX_OVERFLOW")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="paysys-bench-burst-") as workdir,
        private_redis(Path(workdir)) as redis_url,
        scratch_database("burst") as db_url,
        Processes(Path(workdir)) as procs,
    ):
        env = service_env(
            db_url,
            redis_url,
            ENV="test",
            DB_POOL_SIZE=str(args.pool_size),
            DB_MAX_OVERFLOW=str(args.max_overflow),
            PASSWORD_CHANGE_MAX="1000000",
        )
        port = free_port()
        procs.serve("auth", port, env)
        base = f"http://127.0.0.1:{port}"
        procs.wait_ready("auth", f"{base}/health/ready", 60)
        result = asyncio.run(measure(base, args))
    result["settings"] = {
        "seconds": args.seconds,
        "others": args.others,
        "interval": args.interval,
        "changers": args.changers,
        "pool_size": args.pool_size,
        "max_overflow": args.max_overflow,
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    quiet, burst = result["quiet"], result["burst"]
    print(
        f"machine: {os.cpu_count()} cpus; auth pool {args.pool_size}+{args.max_overflow}; "
        f"{args.others} users logging in every {args.interval} s, "
        f"{args.changers} changing passwords"
    )
    print(f"{'':>22} {'quiet':>10} {'burst':>10} {'burst/quiet':>12}")
    for key, label in (
        ("login_p50_ms", "login p50 ms"),
        ("login_p99_ms", "login p99 ms"),
        ("logins_per_s", "logins/s"),
        ("me_p99_ms", "/me p99 ms"),
    ):
        ratio = burst[key] / quiet[key] if quiet[key] else float("nan")
        print(f"{label:>22} {quiet[key]:>10.1f} {burst[key]:>10.1f} {ratio:>11.2f}x")
    print(f"{'password changes/s':>22} {'':>10} {burst['changes_per_s']:>10.1f}")


if __name__ == "__main__":
    main()
