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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from statistics import median

import httpx
from sqlalchemy.engine import make_url
from tests.support.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
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


class Procs:
    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


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


_LAT = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes (and their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def run_wrk(
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
    out = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lat = {m.group(1): float(m.group(2)) * _UNIT[m.group(3)] for m in _LAT.finditer(out)}
    errors = _NON2XX.search(out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx responses\n{out}")
    rps = float(_RPS.search(out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    per = 1e6 / max(1, requests)
    return {
        "rps": rps,
        "p50": lat["50"],
        "p99": lat["99"],
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

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="paysys-bench-gw-") as tmp:
        workdir = Path(tmp)
        procs = Procs(workdir)
        stack.callback(procs.stop)
        env = {
            **os.environ,
            "ENV": "test",
            "LOG_LEVEL": "WARNING",
            "BACKGROUND_WORKERS": "false",
            "RATE_LIMIT_MAX": "1000000000",
            "PYTHONPATH": str(workdir),
        }
        env.pop("PORT", None)
        if shutil.which("redis-server"):
            redis_port = free_port()
            procs.start(
                "redis",
                [
                    "redis-server",
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                ],
                env,
            )
            wait_for_port(redis_port)
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        base = env.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/paysys")
        url = make_url(base)
        env["DATABASE_URL"] = url.set(database=f"{url.database}_bench_gateway").render_as_string(
            hide_password=False
        )

        service_port, gateway_port, nginx_port = free_port(), free_port(), free_port()
        if args.target == "auth-me":
            from paysys.core.config import Settings
            from paysys.db import migrate

            migrate.upgrade(Settings(_env_file=None, database_url=env["DATABASE_URL"]))  # type: ignore[call-arg]
            service_cmd = [
                sys.executable,
                "-m",
                "paysys.cli.serve",
                "auth",
                "--port",
                str(service_port),
            ]
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
            from paysys.core.security import TokenCodec

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
        gateway_proc = procs.start(
            "gateway",
            [sys.executable, "-m", "paysys.cli.serve", "gateway", "--port", str(gateway_port)],
            gw_env,
        )
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
            run_wrk(tools["wrk"], target, token, 4, 1.0)  # warm up pools and caches

        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for concurrency in (1, args.concurrency):
                for name, target in targets.items():
                    results.setdefault((name, concurrency), []).append(
                        run_wrk(
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
