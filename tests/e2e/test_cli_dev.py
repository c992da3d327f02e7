"""`make dev`'s last step, `paysys dev`, as a real process: all five services reach ready with
auto-reload on, `paysys check health` agrees, and one Ctrl-C (SIGINT) stops them all.
`paysys dev <service>` runs one service on PORT."""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from paysys import SERVICES
from tests.support.cli import PAYSYS, http_ok, scratch_database, stop_process, wait_for
from tests.support.servers import RedisServer, free_port

URL_VARS = {
    "gateway": "GATEWAY_URL",
    "auth": "AUTH_SERVICE_URL",
    "payments": "PAYMENTS_SERVICE_URL",
    "admin": "ADMIN_SERVICE_URL",
    "profile": "PROFILE_SERVICE_URL",
}


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def serve_processes(port: int) -> list[str]:
    """Command lines of the processes running a service on `port` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "paysys.cli.serve" in cmdline and f"--port {port}" in cmdline:
            found.append(cmdline)
    return found


class PtyReader:
    """Collects what a process writes to its terminal (honcho colours only on a terminal)."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.chunks.append(data)

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


@pytest.fixture
def private_infra(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A migrated database and a redis-server of its own: the services' background workers
    (relay, consumers, processor) never compete with the rest of the run."""
    redis = RedisServer(free_port(), tmp_path / "redis")
    redis.start()
    try:
        with scratch_database("cli_dev") as url:
            migrate = subprocess.run(
                [*PAYSYS, "db", "deploy"],
                env={**os.environ, "DATABASE_URL": url},
                capture_output=True,
            )
            assert migrate.returncode == 0, migrate.stdout + migrate.stderr
            yield {"DATABASE_URL": url, "REDIS_URL": redis.url}
    finally:
        redis.stop()


def test_dev_runs_all_five_until_ctrl_c(tmp_path: Path, private_infra: dict[str, str]) -> None:
    ports = {name: free_port() for name in SERVICES}
    env = {k: v for k, v in os.environ.items() if k != "PORT"}
    env.update(private_infra)
    env.update({URL_VARS[name]: f"http://127.0.0.1:{port}" for name, port in ports.items()})
    env["PAYSYS_STATE_DIR"] = str(tmp_path / ".paysys")
    # Auto-reload watches a private directory here (the shared checkout changes all the time).
    watched = tmp_path / "watched"
    watched.mkdir()
    env["PAYSYS_RELOAD_DIRS"] = str(watched)
    terminal = PtyReader()
    proc = subprocess.Popen(
        [*PAYSYS, "dev"],
        env=env,
        stdout=terminal.slave,
        stderr=terminal.slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(terminal.slave)
    try:
        for name, port in ports.items():
            wait_for(
                lambda port=port: http_ok(f"http://127.0.0.1:{port}/health/ready"),
                120,
                f"{name} ready\n{terminal.text()[-3000:]}",
            )
        check = subprocess.run([*PAYSYS, "check", "health"], env=env, capture_output=True)
        output = check.stdout.decode()
        assert check.returncode == 0, output
        assert "5/5 healthy" in output
        # Auto-reload: a code change restarts every service, which comes back ready.
        for port in ports.values():
            assert any("--reload" in cmd for cmd in serve_processes(port))
        (watched / "changed.py").write_text("VALUE = 1\n")
        wait_for(
            lambda: terminal.text().count("Reloading...") >= len(SERVICES),
            60,
            f"every service reloading\n{terminal.text()[-3000:]}",
        )
        for name, port in ports.items():
            wait_for(
                lambda port=port: http_ok(f"http://127.0.0.1:{port}/health/ready"),
                120,
                f"{name} ready after reload",
            )
    finally:
        code = stop_process(proc, signal.SIGINT, timeout=60)
    assert code == 130  # honcho's answer to SIGINT, after stopping every service
    for name, port in ports.items():
        assert not listening(port), name
        assert serve_processes(port) == [], name
    text = terminal.text()
    assert "SIGINT received" in text
    for name in SERVICES:
        # One prefix per service, coloured (ANSI escape before the time and name).
        assert re.search(rf"\x1b\[[\d;]+m\d\d:\d\d:\d\d {name}\s*\| ", text), name
        assert re.search(rf"system\s*\| {name} (stopped|started)", text), name
    assert "\x1b[" in text


def test_dev_one_service_honours_port(tmp_path: Path, private_infra: dict[str, str]) -> None:
    port = free_port()
    env = {**os.environ, **private_infra, "PORT": str(port)}
    log = tmp_path / "auth.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*PAYSYS, "dev", "auth", "--no-reload"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{port}/health/ready"),
            120,
            f"auth ready: {log.read_text()[-2000:]}",
        )
    finally:
        code = stop_process(proc, signal.SIGINT)
    assert code in (0, 130)  # stopped by Ctrl-C, cleanly
    assert not listening(port)
    assert f"http://127.0.0.1:{port}" in log.read_text()  # uvicorn's startup line
