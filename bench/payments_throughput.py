"""Payments benchmark: create and get through the gateway vs a raw asyncpg endpoint.

    .venv/bin/python -m bench.payments_throughput [--seconds 5] [--concurrency 16] [--json]

Same machine, same run, fixed concurrency, load by `wrk` (C, one thread) so the generator
costs little CPU. Uses the PostgreSQL of DATABASE_URL (scratch database
`<name>_bench_payments`, migrated, dropped at the end) and a private redis-server.

Processes (uvicorn + uvloop, one worker each, like `paysys dev`): the payments service
(PAYMENTS_PROCESSOR=none so the simulated processor does not add work during the measurement),
the gateway in front of it (rate limit raised out of the way), and `bench.payments_raw`
(raw ASGI + asyncpg: one INSERT / one SELECT, no auth, no validation: the ceiling).

Reported: requests/s for raw INSERT, raw SELECT, create and get through the gateway and
directly on the payments port; ratios gateway ÷ raw (targets: create ≥ 0.25, get ≥ 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.support import (
    Processes,
    cpu_seconds,
    free_port,
    private_redis,
    run_wrk,
    scratch_database,
    service_env,
    wait_http,
)
from paysys.core.config import Settings
from paysys.core.db import raw_dsn
from paysys.core.tokens import TokenCodec


def wrk(url: str, lua: str, seconds: float, concurrency: int, tmp: Path) -> dict[str, Any]:
    script = tmp / f"s{uuid.uuid4().hex[:6]}.lua"
    script.write_text(lua)
    result = run_wrk(url, concurrency, int(seconds), ["-s", str(script)])
    return {"rps": result.rps, "non2xx": result.non2xx, "p50": result.p50, "p99": result.p99}


def profile(
    folder: str | None, run: str, pids: dict[str, int], seconds: float
) -> list[subprocess.Popen[bytes]]:
    """py-spy on every server process for the length of one run (needs `pip install py-spy`)."""
    if not folder:
        return []
    Path(folder).mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                *("py-spy", "record", "--format", "raw", "--rate", "500", "--nonblocking"),
                *("-d", str(int(seconds)), "-p", str(pid), "-o", f"{folder}/{run}.{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def lua(method: str, headers: dict[str, str], body: str | None = None) -> str:
    lines = [f'wrk.method = "{method}"']
    for key, value in headers.items():
        lines.append(f'wrk.headers["{key}"] = "{value}"')
    if body is not None:
        lines.append(f"wrk.body = [[{body}]]")
    return "\n".join(lines) + "\n"


async def seed(dsn: str, settings: Settings) -> tuple[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        ids = [uuid.uuid4(), uuid.uuid4()]
        for n, user_id in enumerate(ids):
            await conn.execute(
                "INSERT INTO users (id, email, name, role, password_hash) "
                "VALUES ($1, $2, $3, 'CUSTOMER', 'x')",
                user_id,
                f"bench{n}@example.com",
                f"Bench {n}",
            )
    finally:
        await conn.close()
    token, _ = TokenCodec(settings).issue_access(
        user_id=ids[0], email="bench0@example.com", name="Bench 0", role="CUSTOMER", sid="bench"
    )
    return token, str(ids[1])


RAW_ROW = json.dumps({"amount": 1000, "currency": "USD", "description": "bench"})


def payments_env(db_url: str, redis_url: str) -> dict[str, str]:
    """The environment of the bench's payments services and gateways: no processor work during
    the measurement, the rate limit out of the way, and the raw endpoint's connection budget
    (an asyncpg pool of 10): DB_POOL_SIZE=10 without overflow (with the default overflow,
    connections beyond 10 are opened and closed per burst)."""
    return service_env(
        db_url,
        redis_url,
        ENV="test",
        PAYMENTS_PROCESSOR="none",
        RATE_LIMIT_MAX="100000000",
        DB_POOL_SIZE="10",
        DB_MAX_OVERFLOW="0",
    )


def create_body(recipient: str) -> str:
    return json.dumps(
        {
            "amount": "10.00",
            "currency": "USD",
            "type": "instant",
            "description": "bench",
            "recipientId": recipient,
        }
    )


def raw_command(port: int) -> list[str]:
    """Start `bench.payments_raw` (the ceiling) on `port`."""
    return [sys.executable, "-m", "bench.payments_raw", "--port", str(port)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record each run's service processes with py-spy (collapsed stacks) into DIR",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found")
    with (
        tempfile.TemporaryDirectory(prefix="paysys-bench-pay-") as tmpdir,
        private_redis(Path(tmpdir)) as redis_url,
        scratch_database("payments") as db_url,
        Processes(Path(tmpdir)) as procs,
    ):
        tmp = Path(tmpdir)
        env = payments_env(db_url, redis_url)
        token, recipient = asyncio.run(seed(raw_dsn(db_url), Settings(database_url=db_url)))
        ports = {name: free_port() for name in ("payments", "gateway", "raw", "gateway_raw")}
        env["PAYMENTS_SERVICE_URL"] = f"http://127.0.0.1:{ports['payments']}"
        service_pids = {
            name: procs.serve(name, ports[name], {**env, "PORT": str(ports[name])}).pid
            for name in ("payments", "gateway")
        }
        service_pids["raw"] = procs.start("raw", raw_command(ports["raw"]), env).pid
        # A second gateway, in front of the raw endpoint: the same toll paid by the ceiling.
        raw_env = {
            **env,
            "PORT": str(ports["gateway_raw"]),
            "PAYMENTS_SERVICE_URL": f"http://127.0.0.1:{ports['raw']}",
        }
        service_pids["gateway_raw"] = procs.serve(
            "gateway", ports["gateway_raw"], raw_env, name="gateway_raw"
        ).pid
        for name in ("payments", "gateway", "gateway_raw"):
            procs.wait_ready(name, f"http://127.0.0.1:{ports[name]}/health/live", 120)
        wait_http(f"http://127.0.0.1:{ports['raw']}/nothing", 120)
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = create_body(recipient)
        gw = f"http://127.0.0.1:{ports['gateway']}"
        direct = f"http://127.0.0.1:{ports['payments']}"
        raw = f"http://127.0.0.1:{ports['raw']}"
        gw_raw = f"http://127.0.0.1:{ports['gateway_raw']}"
        made = httpx.post(f"{gw}/api/payments", content=body, headers=auth, timeout=10)
        made.raise_for_status()
        pid = made.json()["data"]["id"]
        raw_id = httpx.post(f"{raw}/raw", content=RAW_ROW, timeout=10).json()["id"]
        raw_insert_lua = lua("POST", {"Content-Type": "application/json"}, RAW_ROW)
        runs = {
            "raw_insert": (f"{raw}/raw", raw_insert_lua),
            "raw_select": (f"{raw}/raw/{raw_id}", lua("GET", {})),
            # The ceiling behind a gateway (same JWT + rate limit + revocation at the edge).
            "raw_insert_via_gateway": (f"{gw_raw}/api/payments", lua("POST", auth, RAW_ROW)),
            "raw_select_via_gateway": (f"{gw_raw}/api/payments/{raw_id}", lua("GET", auth)),
            "gateway_create": (f"{gw}/api/payments", lua("POST", auth, body)),
            "gateway_get": (f"{gw}/api/payments/{pid}", lua("GET", auth)),
            "direct_create": (f"{direct}/api/payments", lua("POST", auth, body)),
            "direct_get": (f"{direct}/api/payments/{pid}", lua("GET", auth)),
            # Reference points: the service's framework floor (no auth, no DB) and the gateway
            # in front of it.
            "direct_health_live": (f"{direct}/health/live", lua("GET", {})),
            "gateway_health_live": (f"{gw}/health/live", lua("GET", {})),
        }
        # Warm-up (connection pools, prepared statements), then measure.
        for target, script in runs.values():
            wrk(target, script, 1, args.concurrency, tmp)
        results = {}
        for name, (target, script) in runs.items():
            before = {k: cpu_seconds([v]) for k, v in service_pids.items()}
            spies = profile(args.profile, name, service_pids, args.seconds)
            result = wrk(target, script, args.seconds, args.concurrency, tmp)
            for spy in spies:
                spy.wait()
            total = result["rps"] * args.seconds
            # CPU milliseconds each server process spent per request of this run.
            result["cpu_ms_per_req"] = {
                k: round((cpu_seconds([v]) - before[k]) * 1000 / max(total, 1), 3)
                for k, v in service_pids.items()
            }
            results[name] = result
        report = {
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "results": results,
            "ratios": {
                "create_gateway_vs_raw_insert": round(
                    results["gateway_create"]["rps"] / results["raw_insert"]["rps"], 3
                ),
                "get_gateway_vs_raw_select": round(
                    results["gateway_get"]["rps"] / results["raw_select"]["rps"], 3
                ),
                "create_direct_vs_raw_insert": round(
                    results["direct_create"]["rps"] / results["raw_insert"]["rps"], 3
                ),
                "get_direct_vs_raw_select": round(
                    results["direct_get"]["rps"] / results["raw_select"]["rps"], 3
                ),
                # Both behind a gateway: what the service costs beside the ceiling.
                "create_gateway_vs_raw_insert_via_gateway": round(
                    results["gateway_create"]["rps"] / results["raw_insert_via_gateway"]["rps"], 3
                ),
                "get_gateway_vs_raw_select_via_gateway": round(
                    results["gateway_get"]["rps"] / results["raw_select_via_gateway"]["rps"], 3
                ),
            },
        }
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"concurrency {args.concurrency}, {args.seconds:.0f} s per run (wrk -t1)")
            for name, r in results.items():
                cpu = " ".join(f"{k}={v}" for k, v in r["cpu_ms_per_req"].items() if v)
                print(
                    f"  {name:22s} {r['rps']:6.0f} req/s  p50 {r['p50']:>8s}  p99 {r['p99']:>8s}"
                    f"  non-2xx {r['non2xx']}  cpu ms/req {cpu}"
                )
            for name, value in report["ratios"].items():
                print(f"  {name:42s} {value:.2f}x")


if __name__ == "__main__":
    main()
