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
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from paysys.core.config import Settings
from paysys.core.db import drop_database, raw_dsn
from paysys.core.security import TokenCodec


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def wrk(url: str, lua: str, seconds: float, concurrency: int, tmp: Path) -> dict[str, Any]:
    script = tmp / f"s{uuid.uuid4().hex[:6]}.lua"
    script.write_text(lua)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    return {
        "rps": rps,
        "non2xx": int(bad.group(1)) if bad else 0,
        "p50": p50.group(1) if p50 else "?",
        "p99": p99.group(1) if p99 else "?",
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile(
    folder: str | None, run: str, pids: dict[str, int], seconds: float
) -> list[subprocess.Popen[bytes]]:
    """py-spy on every server process for the length of one run (needs `pip install py-spy`)."""
    if not folder:
        return []
    Path(folder).mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            ["py-spy", "record", "--format", "raw", "--rate", "500", "--nonblocking"]
            + ["-d", str(int(seconds)), "-p", str(pid), "-o", f"{folder}/{run}.{name}.txt"],
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
    base = Settings()
    url = make_url(base.database_url)
    db_url = url.set(database=f"{url.database}_bench_payments").render_as_string(
        hide_password=False
    )
    tmp = Path(tempfile.mkdtemp(prefix="paysys-bench-pay-"))
    procs: list[subprocess.Popen[bytes]] = []
    redis_port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": db_url,
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "ENV": "test",
            "LOG_LEVEL": "WARNING",
            "PAYMENTS_PROCESSOR": "none",
            "RATE_LIMIT_MAX": "100000000",
        }
    )
    try:
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                cwd=tmp,
            )
        )
        settings = Settings(database_url=db_url)
        asyncio.run(drop_database(db_url))
        from paysys.db import migrate

        migrate.upgrade(settings)
        token, recipient = asyncio.run(seed(raw_dsn(db_url), settings))
        ports = {name: free_port() for name in ("payments", "gateway", "raw")}
        env["PAYMENTS_SERVICE_URL"] = f"http://127.0.0.1:{ports['payments']}"
        for name in ("payments", "gateway"):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "paysys.cli.serve", name, "--port", str(ports[name])],
                    env={**env, "PORT": str(ports[name])},
                    stdout=(tmp / f"{name}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.payments_raw", "--port", str(ports["raw"])],
                env=env,
                stdout=(tmp / "raw.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        for name in ("payments", "gateway"):
            try:
                wait_http(f"http://127.0.0.1:{ports[name]}/health/live")
            except TimeoutError:
                print((tmp / f"{name}.log").read_text()[-3000:], file=sys.stderr)
                raise
        wait_http(f"http://127.0.0.1:{ports['raw']}/nothing")
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        create_body = json.dumps(
            {
                "amount": "10.00",
                "currency": "USD",
                "type": "instant",
                "description": "bench",
                "recipientId": recipient,
            }
        )
        gw = f"http://127.0.0.1:{ports['gateway']}"
        direct = f"http://127.0.0.1:{ports['payments']}"
        raw = f"http://127.0.0.1:{ports['raw']}"
        made = httpx.post(f"{gw}/api/payments", content=create_body, headers=auth, timeout=10)
        made.raise_for_status()
        pid = made.json()["data"]["id"]
        raw_made = httpx.post(
            f"{raw}/raw",
            content=json.dumps({"amount": 1000, "currency": "USD", "description": "bench"}),
            timeout=10,
        )
        raw_id = raw_made.json()["id"]
        raw_insert_lua = lua(
            "POST",
            {"Content-Type": "application/json"},
            json.dumps({"amount": 1000, "currency": "USD", "description": "bench"}),
        )
        runs = {
            "raw_insert": (f"{raw}/raw", raw_insert_lua),
            "raw_select": (f"{raw}/raw/{raw_id}", lua("GET", {})),
            "gateway_create": (f"{gw}/api/payments", lua("POST", auth, create_body)),
            "gateway_get": (f"{gw}/api/payments/{pid}", lua("GET", auth)),
            "direct_create": (f"{direct}/api/payments", lua("POST", auth, create_body)),
            "direct_get": (f"{direct}/api/payments/{pid}", lua("GET", auth)),
            # Reference points: the service's framework floor (no auth, no DB) and the gateway
            # in front of it.
            "direct_health_live": (f"{direct}/health/live", lua("GET", {})),
            "gateway_health_live": (f"{gw}/health/live", lua("GET", {})),
        }
        # Warm-up (connection pools, prepared statements), then measure.
        for target, script in runs.values():
            wrk(target, script, 1, args.concurrency, tmp)
        service_pids = {"payments": procs[1].pid, "gateway": procs[2].pid, "raw": procs[3].pid}
        results = {}
        for name, (target, script) in runs.items():
            before = {k: cpu_seconds(v) for k, v in service_pids.items()}
            spies = profile(args.profile, name, service_pids, args.seconds)
            result = wrk(target, script, args.seconds, args.concurrency, tmp)
            for spy in spies:
                spy.wait()
            total = result["rps"] * args.seconds
            # CPU milliseconds each server process spent per request of this run.
            result["cpu_ms_per_req"] = {
                k: round((cpu_seconds(v) - before[k]) * 1000 / max(total, 1), 3)
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
            },
        }
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"concurrency {args.concurrency}, {args.seconds:.0f} s per run (wrk -t1)")
            for name, r in results.items():
                cpu = " ".join(f"{k}={v}" for k, v in r["cpu_ms_per_req"].items() if v)
                print(
                    f"  {name:18s} {r['rps']:6.0f} req/s  p50 {r['p50']:>8s}  p99 {r['p99']:>8s}"
                    f"  non-2xx {r['non2xx']}  cpu ms/req {cpu}"
                )
            for name, value in report["ratios"].items():
                print(f"  {name:30s} {value:.2f}x")
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        asyncio.run(drop_database(db_url))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
