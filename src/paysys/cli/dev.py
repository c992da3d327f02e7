"""`paysys dev [service]`: run the services for development.

All five run under a honcho process manager (the Procfile runner): one line prefix and colour
per service, auto-reload on code changes, Ctrl-C stops them all. Each service listens on the
port of its configured URL (GATEWAY_URL, AUTH_SERVICE_URL, ...), so the gateway always finds
the others; a single service (`paysys dev auth`) honours PORT.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any
from urllib.parse import urlsplit

from paysys import SERVICES
from paysys.core.config import Settings

# Start order: the gateway last, so its readiness (which checks the others) settles quickly.
START_ORDER = ("auth", "payments", "admin", "profile", "gateway")


def service_url(settings: Settings, service: str) -> str:
    if service == "gateway":
        return settings.gateway_url
    return settings.service_urls()[service][0]


def service_port(settings: Settings, service: str) -> int:
    from paysys.cli.serve import DEFAULT_PORTS  # (serve imports uvicorn: only when needed)

    port = urlsplit(service_url(settings, service)).port
    return port or DEFAULT_PORTS[service]


def service_command(service: str, port: int, reload: bool) -> str:
    command = [sys.executable, "-m", "paysys.cli.serve", service, "--port", str(port)]
    if reload:
        command.append("--reload")
    return shlex.join(command)


def build_manager(settings: Settings, reload: bool, colour: bool | None = None) -> Any:
    from honcho.manager import Manager
    from honcho.printer import Printer

    printer = Printer(sys.stdout)
    if colour is not None:
        printer._colours_supported = colour
    manager = Manager(printer)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("UVICORN_LOG_LEVEL", "info")  # startup, reload and shutdown lines per service
    for service in START_ORDER:
        # Each service listens on the port of its URL: `--port`, and PORT to match (the payment
        # processor reports to that port, never to a stray PORT of the shell or to 3002).
        port = service_port(settings, service)
        manager.add_process(
            service, service_command(service, port, reload), env={**env, "PORT": str(port)}
        )
    return manager


def run_all(reload: bool = True, colour: bool | None = None) -> int:
    manager = build_manager(Settings(), reload, colour)
    manager.loop()
    return int(manager.returncode or 0)


def run_one(service: str, reload: bool = True) -> None:
    from paysys.cli.serve import run

    if service not in SERVICES:
        raise SystemExit(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    port = int(os.environ["PORT"]) if os.environ.get("PORT") else None
    os.environ.setdefault("UVICORN_LOG_LEVEL", "info")
    run(service, port or service_port(Settings(), service), reload)
