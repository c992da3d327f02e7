"""Side by side: the payments service and the gateway of two (or more) git revisions.

    .venv/bin/python -m bench.compare_trees --tree before=<rev> --tree after=HEAD \\
        [--seconds 3] [--rounds 2] [--concurrency 16] [--targets pay_get pay_create ...]

How a change to the serving path was measured (docs/benchmarks.md, "Payments"): each revision
is checked out into a temporary git worktree, and each gets its own payments service, a gateway
in front of it and a gateway in front of the shared raw endpoint (`bench.payments_raw`), all
against the same scratch database and private Redis. The runs alternate between revisions
(round 1: before, after; round 2: before, after; ...), so both see the same machine, and the
medians of requests/s and of each process's CPU per request are printed. Only the revisions'
`src/` differ; the bench code and the venv are this checkout's.

Targets: `raw_get` (a gateway in front of the raw SELECT), `pay_get`, `pay_create` (through the
gateway), `pay_get_direct` (the payments port).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import uuid
from pathlib import Path

import httpx

from bench.payments_throughput import RAW_ROW, create_body, lua, payments_env, raw_command, seed
from bench.support import (
    ROOT,
    Processes,
    cpu_seconds,
    free_port,
    private_redis,
    run_wrk,
    scratch_database,
    wait_http,
)
from paysys.core.config import Settings
from paysys.core.db import raw_dsn

TARGETS = ("raw_get", "pay_get", "pay_create", "pay_get_direct")


def worktree(rev: str, folder: Path) -> Path:
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--force", str(folder), rev],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return folder / "src"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare_trees")
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=REV")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    args = parser.parse_args()
    trees = dict(item.split("=", 1) for item in args.tree)
    with tempfile.TemporaryDirectory(prefix="paysys-bench-trees-") as tmpdir:
        tmp = Path(tmpdir)
        sources = {name: worktree(rev, tmp / f"tree-{name}") for name, rev in trees.items()}
        try:
            measure(args, sources, tmp)
        finally:
            for name in sources:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(tmp / f"tree-{name}")],
                    cwd=ROOT,
                    check=False,
                    capture_output=True,
                )


def measure(args: argparse.Namespace, sources: dict[str, Path], tmp: Path) -> None:
    with (
        private_redis(tmp) as redis_url,
        scratch_database("trees") as db_url,
        Processes(tmp) as procs,
    ):
        env = payments_env(db_url, redis_url)
        token, recipient = asyncio.run(seed(raw_dsn(db_url), Settings(database_url=db_url)))
        raw_port = free_port()
        pids = {"raw": procs.start("raw", raw_command(raw_port), env).pid}
        ports: dict[str, int] = {}
        for name, src in sources.items():
            tree_env = {**env, "PYTHONPATH": str(src)}
            for role, upstream in (("pay", None), ("gw", f"pay_{name}"), ("gwraw", "raw")):
                key = f"{role}_{name}"
                ports[key] = free_port()
                process_env = {**tree_env, "PORT": str(ports[key])}
                if upstream is not None:
                    port = raw_port if upstream == "raw" else ports[upstream]
                    process_env["PAYMENTS_SERVICE_URL"] = f"http://127.0.0.1:{port}"
                service = "payments" if role == "pay" else "gateway"
                pids[key] = procs.serve(service, ports[key], process_env, name=key).pid
        for key, port in ports.items():
            procs.wait_ready(key, f"http://127.0.0.1:{port}/health/live", 120)
        wait_http(f"http://127.0.0.1:{raw_port}/nothing", 60)

        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = create_body(recipient)
        first = next(iter(sources))
        made = httpx.post(
            f"http://127.0.0.1:{ports['gw_' + first]}/api/payments",
            content=body,
            headers=auth,
            timeout=10,
        )
        made.raise_for_status()
        payment = made.json()["data"]["id"]
        raw_url = f"http://127.0.0.1:{raw_port}/raw"
        raw_row = httpx.post(raw_url, content=RAW_ROW, timeout=10).json()["id"]

        def script(text: str) -> list[str]:
            path = tmp / f"{uuid.uuid4().hex[:8]}.lua"
            path.write_text(text)
            return ["-s", str(path)]

        get, create = script(lua("GET", auth)), script(lua("POST", auth, body))
        runs: dict[tuple[str, str], tuple[str, list[str], list[str]]] = {}
        for name in sources:
            gw, gwraw, pay = (
                f"http://127.0.0.1:{ports[f'{r}_{name}']}" for r in ("gw", "gwraw", "pay")
            )
            runs["raw_get", name] = (
                f"{gwraw}/api/payments/{raw_row}",
                get,
                [f"gwraw_{name}", "raw"],
            )
            runs["pay_get", name] = (
                f"{gw}/api/payments/{payment}",
                get,
                [f"gw_{name}", f"pay_{name}"],
            )
            runs["pay_create", name] = (f"{gw}/api/payments", create, [f"gw_{name}", f"pay_{name}"])
            runs["pay_get_direct", name] = (f"{pay}/api/payments/{payment}", get, [f"pay_{name}"])
        for (target, _), (url, lua_args, _) in runs.items():
            if target in args.targets:
                run_wrk(url, 4, 1, lua_args)  # warm-up: pools, prepared statements, caches

        samples: dict[tuple[str, str], list[tuple[float, dict[str, float]]]] = {}
        for _ in range(args.rounds):
            for target in args.targets:
                for name in sources:
                    url, lua_args, processes = runs[target, name]
                    before = {p: cpu_seconds([pids[p]]) for p in processes}
                    result = run_wrk(url, args.concurrency, args.seconds, lua_args)
                    count = max(result.rps * args.seconds, 1)
                    cpu = {
                        p.split("_")[0]: (cpu_seconds([pids[p]]) - before[p]) * 1e6 / count
                        for p in processes
                    }
                    samples.setdefault((target, name), []).append((result.rps, cpu))
        print(f"concurrency {args.concurrency}, {args.seconds} s x {args.rounds} rounds, medians")
        for target in args.targets:
            for name in sources:
                rows = samples[target, name]
                rps = statistics.median(r for r, _ in rows)
                cpu = {p: round(statistics.median(c[p] for _, c in rows)) for p in rows[0][1]}
                usage = "  ".join(f"{p} {v} µs/req" for p, v in cpu.items())
                print(f"  {target:15s} {name:10s} {rps:7.0f} req/s  {usage}", flush=True)


if __name__ == "__main__":
    main()
