"""Slow clients: a normal client's latency, quiet vs under the slow-client attack (issue 13).

    .venv/bin/python -m bench.slow_clients [--samples 300] [--rounds 2] [--connections 1000]
        [--attackers 1]

The attack of api-contracts §2.1 (the e2e drill's, `tests.support.slowclients`): from 127.0.0.2,
`--connections` sockets stalled one byte per second inside their headers (half) or inside a small
body to `POST /api/payments/webhooks/psp` (half), reopened 2 s after the server closes them, plus
failed logins at 10x the login limit. The normal client, from 127.0.0.3, sends authenticated
`GET /api/payments?limit=5` one after another through the same gateway. Each round measures it
quiet, then under attack; p50/p99, errors and the CPU the gateway spent per second are printed,
with the ratio attacked ÷ quiet (target: p99 < 2x, zero errors). `--attackers N` spreads the
sockets over N source addresses (127.0.0.10, .11, ...): past the per-address caps, the case of
many attacking hosts, where only the gateway's body rule keeps the upstream pools free.

Real processes on loopback: the five services (`paysys serve`), a scratch database
(`<DATABASE_URL db>_bench_slowclients`, dropped at the end) and a private redis-server. Bounded:
each attack lasts `--attack-seconds` (12 s by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.support.slowclients import Sample, measure, normal_client, raise_open_files

from bench.payments_throughput import seed
from bench.support import (
    Processes,
    cpu_seconds,
    free_port,
    private_redis,
    scratch_database,
    service_env,
)
from paysys.core.config import Settings
from paysys.core.db import raw_dsn

ATTACKER = "127.0.0.2"
CLIENT = "127.0.0.3"
LIST = "/api/payments?limit=5"
SERVICES = ("auth", "payments", "admin", "profile")


async def attack_process(
    gateway: str, sources: str, connections: int, seconds: float, logins: int
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.slowclients",
        *("--target", gateway, "--source", sources, "--connections", str(connections)),
        *("--seconds", str(seconds), "--logins", str(logins)),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if not line.startswith(b"READY"):
        raise RuntimeError(f"the attacker did not start: {line!r}")
    return process


async def attack_summary(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    out = await asyncio.wait_for(process.stdout.read(), 120)
    await process.wait()
    for line in out.decode().splitlines():
        if line.startswith("SUMMARY "):
            return dict(json.loads(line[8:]))
    raise RuntimeError(f"no summary from the attacker: {out[-2000:]!r}")


def sources(count: int) -> str:
    """127.0.0.2 for one attacker; 127.0.0.10, .11, ... for several (never the client's .3)."""
    if count == 1:
        return ATTACKER
    return ",".join(f"127.0.0.{10 + index}" for index in range(count))


def figures(sample: Sample, cpu: float, seconds: float) -> dict[str, Any]:
    return {
        "p50": round(sample.percentile(0.5), 2),
        "p99": round(sample.percentile(0.99), 2),
        "errors": len(sample.errors),
        "statuses": {str(k): v for k, v in sorted(sample.statuses.items())},
        "gateway_cpu_per_s": round(cpu / seconds, 3),
    }


async def timed(client: Any, samples: int, gateway_pid: int) -> tuple[Sample, float, float]:
    cpu, started = cpu_seconds([gateway_pid]), time.monotonic()
    sample = await measure(client, LIST, samples)
    return sample, cpu_seconds([gateway_pid]) - cpu, time.monotonic() - started


async def run(args: argparse.Namespace, urls: dict[str, str], token: str, pid: int) -> list[Any]:
    limit = Settings().auth_rate_limit_max
    rounds = []
    async with normal_client(urls["gateway"], CLIENT, token) as client:
        await measure(client, LIST, 50)  # warm up
        for _ in range(args.rounds):
            quiet, quiet_cpu, quiet_s = await timed(client, args.samples, pid)
            attacker = await attack_process(
                urls["gateway"],
                sources(args.attackers),
                args.connections,
                args.attack_seconds,
                10 * limit,
            )
            await asyncio.sleep(2)
            attacked, attacked_cpu, attacked_s = await timed(client, args.samples, pid)
            summary = await attack_summary(attacker)
            rounds.append(
                {
                    "quiet": figures(quiet, quiet_cpu, quiet_s),
                    "attacked": figures(attacked, attacked_cpu, attacked_s),
                    "attacker": summary,
                }
            )
            print(json.dumps(rounds[-1]), flush=True)
            await asyncio.sleep(2)  # let the gateway drop what the attacker left
    return rounds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--attack-seconds", type=float, default=12.0)
    parser.add_argument(
        "--attackers",
        type=int,
        default=1,
        help="source addresses the connections are spread over (the contract's case is 1; "
        "several get past per-address caps, as a botnet would)",
    )
    args = parser.parse_args(argv)
    raise_open_files(args.connections * 2 + 1024)

    with tempfile.TemporaryDirectory(prefix="paysys-bench-slow-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        redis_url = stack.enter_context(private_redis(workdir))
        database_url = stack.enter_context(scratch_database("slowclients"))
        ports = {name: free_port() for name in (*SERVICES, "gateway")}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env = service_env(
            database_url,
            redis_url,
            ENV="test",
            BACKGROUND_WORKERS="false",
            RATE_LIMIT_MAX="100000000",
            **{f"{name.upper()}_SERVICE_URL": urls[name] for name in SERVICES},
        )
        env.pop("PORT", None)
        procs = stack.enter_context(Processes(workdir))
        started = {name: procs.serve(name, port, env) for name, port in ports.items()}
        for name, url in urls.items():
            procs.wait_ready(name, f"{url}/health/ready", timeout=90)
        token, _ = asyncio.run(seed(raw_dsn(database_url), Settings()))
        rounds = asyncio.run(run(args, urls, token, started["gateway"].pid))

    print(
        f"\nslow clients: {args.connections} stalled connections from {args.attackers} "
        "address(es) + a login flood at 10x"
    )
    print(f"{'':10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'gw CPU/s':>9}")
    for phase in ("quiet", "attacked"):
        values = [r[phase] for r in rounds]
        print(
            f"{phase:10} {statistics.median(v['p50'] for v in values):8.2f} "
            f"{statistics.median(v['p99'] for v in values):8.2f} "
            f"{sum(v['errors'] for v in values):7d} "
            f"{statistics.median(v['gateway_cpu_per_s'] for v in values):9.3f}"
        )
    ratios = [r["attacked"]["p99"] / r["quiet"]["p99"] for r in rounds]
    print("p99 attacked ÷ quiet per round: " + ", ".join(f"{x:.2f}" for x in ratios))


if __name__ == "__main__":
    main()
