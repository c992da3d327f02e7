"""What every benchmark needs around the thing it measures: free ports, a private redis-server,
a scratch database, service processes, CPU time from /proc and wrk's report.

Free ports, waiting for a port and the throw-away redis-server are the test suite's own
(`tests.support.servers`), so a bench starts its infrastructure exactly as the tests do.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
from sqlalchemy.engine import make_url
from tests.support.servers import RedisServer, free_port, wait_for_port

from paysys.core.config import Settings
from paysys.core.db import drop_database

__all__ = [
    "Processes",
    "WrkResult",
    "cpu_seconds",
    "free_port",
    "latency_ms",
    "parse_wrk",
    "private_redis",
    "run_wrk",
    "scratch_database",
    "scratch_database_url",
    "service_env",
    "wait_for_port",
    "wait_http",
]

ROOT = Path(__file__).resolve().parents[1]


# -- infrastructure ------------------------------------------------------------------------------
@contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """A throw-away redis-server on a free port (yields its URL): a bench flushes it at will."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not found")
    server = RedisServer(free_port(), workdir)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def scratch_database_url(suffix: str, base: str | None = None) -> str:
    """`<DATABASE_URL's db>_bench_<suffix>`: a bench never writes to the database it was given."""
    url = make_url(base or Settings().database_url)
    return url.set(database=f"{url.database}_bench_{suffix}").render_as_string(hide_password=False)


@contextmanager
def scratch_database(suffix: str, revision: str = "head") -> Iterator[str]:
    """A fresh scratch database migrated to `revision` (yields its URL), dropped at the end, so
    no run sees rows of an earlier one."""
    from paysys.db import migrate

    database_url = scratch_database_url(suffix)
    try:
        asyncio.run(drop_database(database_url))
        migrate.upgrade(Settings(database_url=database_url), revision)
        yield database_url
    finally:
        asyncio.run(drop_database(database_url))


def service_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a process a bench starts: this run's database and Redis, and warnings
    only (log lines would cost CPU inside the measurement)."""
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return {**env, **extra}


# -- processes -----------------------------------------------------------------------------------
class Processes:
    """The processes a bench starts (each logging to `<logdir>/<name>.log`), all stopped when
    the bench ends, even when it fails."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start one process with its output in its log (read back when it does not come up);
        its own session, so Ctrl-C reaches only the bench, which then stops it in order."""
        log = (self.logdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def serve(
        self, service: str, port: int, env: dict[str, str], name: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `python -m paysys.cli.serve <service>`: the service as production runs it
        (`name` tells two processes of one service apart in the logs)."""
        args = [sys.executable, "-m", "paysys.cli.serve", service, "--port", str(port)]
        return self.start(name or service, args, env)

    def wait_ready(self, name: str, url: str, timeout: float = 60.0) -> None:
        """wait_http, printing the end of `name`'s log when it times out (why it did not start)."""
        try:
            wait_http(url, timeout)
        except TimeoutError:
            print((self.logdir / f"{name}.log").read_text()[-3000:], file=sys.stderr)
            raise

    def stop(self) -> None:
        """SIGTERM newest first (front before back), then wait; kill what ignores it."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_http(url: str, timeout: float = 60.0) -> None:
    """Block until `url` answers below 500: a process listening is not yet a service started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the processes (all their threads) from /proc, in seconds: unlike req/s,
    CPU time per request does not depend on how busy the shared machine is."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# -- wrk -----------------------------------------------------------------------------------------
_LATENCY = re.compile(r"^\s*(50|99)%\s+([\d.]+(?:us|ms|s|m|h))\s*$", re.M)
_REQUESTS = re.compile(r"(\d+) requests in")
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class WrkResult:
    """One wrk run: throughput, errors and latency percentiles as wrk printed them ("1.23ms")."""

    rps: float
    requests: int
    non2xx: int
    p50: str
    p99: str
    output: str


def parse_wrk(output: str) -> WrkResult:
    """The numbers of a `wrk --latency` report (its text is the only interface wrk has)."""
    rps = _RPS.search(output)
    requests = _REQUESTS.search(output)
    if rps is None or requests is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    non2xx = _NON2XX.search(output)
    latency = dict(_LATENCY.findall(output))
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(requests.group(1)),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        p50=latency.get("50", "?"),
        p99=latency.get("99", "?"),
        output=output,
    )


def latency_ms(text: str) -> float:
    """A wrk latency ("850.00us", "1.23ms", "2.01s") in milliseconds, to compare and subtract."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def run_wrk(
    url: str, concurrency: int, seconds: int, args: Sequence[str] = (), binary: str = "wrk"
) -> WrkResult:
    """Load `url` with wrk on ONE thread (C, so the generator takes little of the 2 shared
    cores), keeping `concurrency` connections busy for `seconds`."""
    output = subprocess.run(
        [binary, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", *args, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(output)
