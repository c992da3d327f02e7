"""Real servers for tests: a private redis-server per run and service processes on free ports."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SERVICE_PORT_ENV = {
    "auth": "AUTH_SERVICE_URL",
    "payments": "PAYMENTS_SERVICE_URL",
    "admin": "ADMIN_SERVICE_URL",
    "profile": "PROFILE_SERVICE_URL",
}


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


# Ports are handed out below the kernel's ephemeral range: a port the kernel picks (bind to 0)
# may be given to an outgoing connection between our check and the server's bind (seen in CI as
# "address already in use"); ports outside that range are only ever taken by explicit binds.
_LOW, _HIGH = _ephemeral_range()
_PORTS = [port for port in range(20000, 65000) if not _LOW <= port <= _HIGH]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, chosen at random outside the ephemeral range, and never
    handed out before in this process: a stack picks all its ports before any process binds,
    so two picks of one port would let one service answer for another (seen in CI)."""
    for _ in range(200):
        port = random.choice(_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port found")


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


@dataclass
class RedisServer:
    """A throw-away redis-server (no persistence) that tests may stop and start at will."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()  # e.g. ("--requirepass", "secret")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paysys.cli.serve", self.name, "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
            try:
                response = httpx.get(f"{self.url}/health/ready", timeout=2)
                # Ready, and this very service answering (not whatever else holds the port).
                ours = response.status_code == 200 and response.json()["data"]["service"]
                if ours == self.name:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready: {last}\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class Stack:
    """The five services as real processes on free ports, sharing the run's DB and Redis."""

    base_env: dict[str, str]
    logdir: Path
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        base_env: dict[str, str],
        logdir: Path,
        names: tuple[str, ...] = ("auth", "payments", "admin", "profile", "gateway"),
        extra_env: dict[str, str] | None = None,
    ) -> Stack:
        logdir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in names}
        env = dict(base_env)
        for name, var in SERVICE_PORT_ENV.items():
            if name in ports:
                env[var] = f"http://127.0.0.1:{ports[name]}"
        env.update(extra_env or {})
        stack = cls(env, logdir)
        for name in names:
            # No PORT here: `paysys serve --port` alone must tell the app where it listens (the
            # payment processor reports there), as in production.
            stack.services[name] = ServiceProcess(name, ports[name], env, logdir / f"{name}.log")
        return stack

    def url(self, name: str = "gateway") -> str:
        return self.services[name].url

    def start(self, *names: str) -> None:
        chosen = names or tuple(self.services)
        for name in chosen:
            self.services[name].start()
        for name in chosen:
            self.services[name].wait_ready()

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
