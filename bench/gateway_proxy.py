"""Gateway cost, side by side in one run: an authenticated GET direct to the service, through the
paysys gateway, and through nginx `proxy_pass` in front of the same service (the physical
reference for proxy cost).

    .venv/bin/python -m bench.gateway_proxy [--duration 5] [--concurrency 16] [--rounds 2]

Needs `wrk` and `nginx` (Debian: `sudo apt-get install -y wrk nginx`); without them it says so
and exits cleanly. Loopback only; a private redis-server and a throw-away database
(`<DATABASE_URL db>_bench_gateway`) on the configured PostgreSQL.

The request is `GET /api/auth/me` with a Bearer token (the auth service: JWT + revocation in
Redis + one DB read). With `--target stub` it is a minimal service route that only
authenticates (no DB): the gateway's share of the cost is then larger.
The gateway runs with its rate limiter on (limit raised so nothing is refused: every request
still pays the Lua script) and with edge JWT + revocation checks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from statistics import median

import httpx

from bench.support import (
    Processes,
    cpu_seconds,
    free_port,
    latency_ms,
    private_redis,
    run_wrk,
    scratch_database_url,
    service_env,
    wait_for_port,
    wait_http,
)

PASSWORD = "Bench-Passw0rd!x"

STUB_APP = """
from fastapi import APIRouter
from paysys.core.envelope import ok
from paysys.core.http import create_service_app
from paysys.core.security import CurrentUser

router = APIRouter(prefix="/api/auth")

@router.get("/me")
async def me(principal: CurrentUser) -> dict:
    return ok({"id": str(principal.id), "email": principal.email, "role": principal.role})

def create_app():
    return create_service_app("auth", [router])
"""


def which_tools() -> dict[str, str] | None:
    tools = {
        name: shutil.which(name) or shutil.which(name, path="/usr/sbin")
        for name in ("wrk", "nginx")
    }
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        print(
            f"skipping the gateway benchmark: {', '.join(missing)} not installed.\n"
            "Install them with: sudo apt-get update && sudo apt-get install -y wrk nginx"
        )
        return None
    return tools  # type: ignore[return-value]


def nginx_conf(workdir: Path, listen: int, upstream: int) -> Path:
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  upstream service {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://service;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
"""
    )
    return conf


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def measure(
    wrk: str,
    url: str,
    token: str,
    concurrency: int,
    duration: float,
    proxy: list[int] | None = None,
    service: list[int] | None = None,
) -> dict[str, float]:
    """One wrk run → req/s, p50/p99 (ms), CPU µs per request of the proxy and the service
    (CPU time does not depend on how busy the shared machine is, unlike req/s)."""
    proxy_before, service_before = cpu_seconds(proxy or []), cpu_seconds(service or [])
    auth = ["-H", f"Authorization: Bearer {token}"]
    result = run_wrk(url, concurrency, max(1, round(duration)), auth, binary=wrk)
    if result.non2xx:
        raise RuntimeError(f"{url}: {result.non2xx} non-2xx responses\n{result.output}")
    per = 1e6 / max(1, result.requests)
    return {
        "rps": result.rps,
        "p50": latency_ms(result.p50),
        "p99": latency_ms(result.p99),
        "proxy_cpu": (cpu_seconds(proxy or []) - proxy_before) * per,
        "service_cpu": (cpu_seconds(service or []) - service_before) * per,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--target", choices=["auth-me", "stub"], default="auth-me")
    args = parser.parse_args(argv)
    tools = which_tools()
    if tools is None:
        return

    with tempfile.TemporaryDirectory(prefix="paysys-bench-gw-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        redis_url = None
        if shutil.which("redis-server"):
            redis_url = stack.enter_context(private_redis(workdir))
        base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/paysys")
        env = service_env(
            scratch_database_url("gateway", base),
            redis_url,
            ENV="test",
            BACKGROUND_WORKERS="false",
            RATE_LIMIT_MAX="1000000000",
            PYTHONPATH=str(workdir),
        )
        env.pop("PORT", None)
        procs = stack.enter_context(Processes(workdir))

        service_port, gateway_port, nginx_port = free_port(), free_port(), free_port()
        if args.target == "auth-me":
            from paysys.core.config import Settings
            from paysys.db import migrate

            migrate.upgrade(Settings(_env_file=None, database_url=env["DATABASE_URL"]))
            service_proc = procs.serve("auth", service_port, env)
        else:
            (workdir / "bench_stub.py").write_text(STUB_APP)
            service_cmd = [
                sys.executable,
                "-m",
                "uvicorn",
                "bench_stub:create_app",
                "--factory",
                "--port",
                str(service_port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--log-level",
                "warning",
                "--no-access-log",
            ]
            service_proc = procs.start("service", service_cmd, env)
        service = f"http://127.0.0.1:{service_port}"
        wait_http(f"{service}/health/live")

        if args.target == "auth-me":
            email = f"bench-{os.getpid()}-{int(time.time())}@example.com"
            r = httpx.post(
                f"{service}/api/auth/register",
                json={"email": email, "password": PASSWORD, "name": "Bench User"},
                timeout=30,
            )
            r.raise_for_status()
            token = r.json()["data"]["accessToken"]
        else:
            import uuid

            from paysys.core.config import Settings
            from paysys.core.tokens import TokenCodec

            token, _ = TokenCodec(Settings()).issue_access(
                user_id=uuid.uuid4(),
                email="bench@example.com",
                name="Bench",
                role="CUSTOMER",
                sid="b",
            )

        gw_env = {
            **env,
            **{f"{n}_SERVICE_URL": service for n in ("AUTH", "PAYMENTS", "ADMIN", "PROFILE")},
        }
        gateway_proc = procs.serve("gateway", gateway_port, gw_env)
        nginx_proc = procs.start(
            "nginx", [tools["nginx"], "-c", str(nginx_conf(workdir, nginx_port, service_port))], env
        )
        for port in (gateway_port, nginx_port):
            wait_for_port(port, 60)

        targets = {
            "direct": f"{service}/api/auth/me",
            "gateway": f"http://127.0.0.1:{gateway_port}/api/auth/me",
            "nginx": f"http://127.0.0.1:{nginx_port}/api/auth/me",
        }
        proxy_pids = {
            "direct": [],
            "gateway": [gateway_proc.pid],
            "nginx": [nginx_proc.pid, *children(nginx_proc.pid)],
        }
        for name, target in targets.items():
            r = httpx.get(target, headers={"authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 200, (name, r.status_code, r.text)
            measure(tools["wrk"], target, token, 4, 1.0)  # warm up pools and caches

        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for concurrency in (1, args.concurrency):
                for name, target in targets.items():
                    results.setdefault((name, concurrency), []).append(
                        measure(
                            tools["wrk"],
                            target,
                            token,
                            concurrency,
                            args.duration,
                            proxy_pids[name],
                            [service_proc.pid],
                        )
                    )

        print(
            f"\nGET /api/auth/me ({args.target}), wrk -t1, {args.duration:g}s x {args.rounds} "
            "rounds, median of rounds"
        )
        print(
            "| concurrency | path | req/s | p50 ms | p99 ms | req/s vs direct | added p50 ms "
            "| proxy CPU µs/req | service CPU µs/req |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for concurrency in (1, args.concurrency):
            direct = results[("direct", concurrency)]
            d_rps = median(r["rps"] for r in direct)
            d_p50 = median(r["p50"] for r in direct)
            for name in targets:
                runs = results[(name, concurrency)]
                rps = median(r["rps"] for r in runs)
                p50 = median(r["p50"] for r in runs)
                p99 = median(r["p99"] for r in runs)
                proxy_cpu = median(r["proxy_cpu"] for r in runs)
                service_cpu = median(r["service_cpu"] for r in runs)
                print(
                    f"| {concurrency} | {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | "
                    f"{rps / d_rps:.2f}x | {p50 - d_p50:+.2f} | "
                    f"{proxy_cpu:.0f} | {service_cpu:.0f} |"
                )


if __name__ == "__main__":
    main()
