"""The container commands work as written: the image's CMD form (`paysys serve <service>`)
honours PORT and stops cleanly on SIGTERM, and the Dockerfile / Compose healthchecks really
pass against a live service and fail against a stopped one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import COMPOSE_FILE, DOCKERFILE
from tests.support.servers import ServiceProcess, free_port

pytestmark = pytest.mark.e2e


def dockerfile_healthcheck() -> list[str]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    line = next(x for x in text.splitlines() if x.startswith("HEALTHCHECK"))
    return json.loads(line.split("CMD ", 1)[1])


def compose_healthcheck(service: str) -> list[str]:
    test = yaml.safe_load(COMPOSE_FILE.read_text())["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return test[1:]


def run_check(argv: list[str], port: int) -> int:
    argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    env = {**os.environ, "PORT": str(port)}
    return subprocess.run(argv, env=env, capture_output=True, timeout=20).returncode


def test_image_command_serves_on_port_and_healthchecks_follow_it(tmp_path: Path) -> None:
    command = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["profile"]["command"]
    assert command[-2:] == ["--host", "0.0.0.0"]
    port = free_port()
    paysys = Path(sys.executable).with_name("paysys")
    # Same command as the container, bound to loopback (this machine: loopback only).
    argv = [str(paysys), *command[1:-1], "127.0.0.1"]
    service = ServiceProcess("profile", port, {**os.environ, "PORT": str(port)}, tmp_path / "p.log")
    log = service.log_path.open("ab")
    service.proc = subprocess.Popen(
        argv, env=service.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        service.wait_ready()
        assert run_check(dockerfile_healthcheck(), port) == 0
        assert run_check(compose_healthcheck("profile"), port) == 0
        os.kill(service.proc.pid, signal.SIGTERM)
        assert service.proc.wait(25) == 0, service.log_path.read_text()[-2000:]
        service.proc = None
        assert run_check(dockerfile_healthcheck(), port) != 0
        assert run_check(compose_healthcheck("profile"), port) != 0
    finally:
        service.stop()
