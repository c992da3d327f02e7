"""`python -m paysys.cli.serve <service> [--port N] [--reload]`: run one service under uvicorn.

Kept free of Typer so a service process imports as little as possible.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

import paysys
from paysys import SERVICES
from paysys.core.config import Settings, get_settings
from paysys.core.edgelimits import EdgeLimits
from paysys.core.runtime import drain_connections, stop_background_work
from paysys.core.serving import CoalescingHttpToolsProtocol, TerminatingWebSocketProtocol

PACKAGE_DIR = Path(paysys.__file__).parent

DEFAULT_PORTS = {"gateway": 3000, "auth": 3001, "payments": 3002, "admin": 3003, "profile": 3004}


def _exit_zero(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def exit_zero_on_sigterm() -> None:
    """SIGTERM is the orderly stop (Kubernetes, Docker, Compose, honcho). uvicorn drains
    in-flight requests and runs the lifespan shutdown (Runtime.close: workers hand back their
    work), then re-raises the signal with the previous handler restored; with Python's default
    disposition the process would die by the signal (status 143) after a clean stop. With this
    handler it exits 0. (Before uvicorn has installed its own handlers: exit 0 at once.)"""
    signal.signal(signal.SIGTERM, _exit_zero)


def run(
    service: str, port: int | None = None, reload: bool = False, host: str = "127.0.0.1"
) -> None:
    if service not in SERVICES:
        raise SystemExit(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    chosen = port or int(os.environ.get("PORT") or DEFAULT_PORTS[service])
    if not 0 < chosen < 65536:
        raise SystemExit(f"port {chosen} is not a TCP port (1-65535)")
    announce_address(host, chosen)
    exit_zero_on_sigterm()
    options = server_options(host, chosen)
    app = f"paysys.{service}.app:create_app"
    if reload:
        watched = os.environ.get("PAYSYS_RELOAD_DIRS") or str(PACKAGE_DIR)
        uvicorn.run(app, reload=True, reload_dirs=watched.split(os.pathsep), **options)
    else:
        DrainingServer(uvicorn.Config(app, **options)).run()


def announce_address(host: str, port: int) -> None:
    """Tell the app where it is served, before it is created: PORT and HOST in the environment
    (inherited by uvicorn's reload child too), read by Settings. The payment processor posts
    its webhooks there; without this it guessed 3002, whoever listens there."""
    os.environ["PORT"] = str(port)
    os.environ["HOST"] = host
    get_settings.cache_clear()


def server_options(host: str, port: int, settings: Settings | None = None) -> dict[str, Any]:
    """How every paysys process is served (uvicorn options), with the limits of api-contracts
    §2.1: uvicorn's own idle keep-alive timeout and process-wide cap (`limit_concurrency`, +1
    because uvicorn counts the connection asking), the rest in the protocol (`core.serving`).
    WebSockets (the gateway's `/ws`, api-contracts §9) use uvicorn's websockets-sansio protocol
    with the §9.5 heartbeat and idle rules, no compression, and a 4 KiB inbound message limit
    (larger → close 1009)."""
    # httptools, one send() per response, deadlines, header size, per-client cap. The class
    # itself reads get_settings() (importable by name: reload mode pickles it).
    protocol = CoalescingHttpToolsProtocol
    if settings is not None:
        protocol = protocol.configured(EdgeLimits.from_settings(settings))
    settings = settings or get_settings()
    return {
        "factory": True,
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": protocol,
        "timeout_keep_alive": settings.keep_alive_timeout,
        "limit_concurrency": settings.gateway_max_connections + 1,
        "ws": TerminatingWebSocketProtocol,
        "ws_ping_interval": settings.ws_ping_interval,
        "ws_ping_timeout": settings.ws_pong_timeout,
        "ws_per_message_deflate": False,
        "ws_max_size": 4096,
        "log_level": os.environ.get("UVICORN_LOG_LEVEL", "warning"),
        "access_log": False,
        "proxy_headers": False,  # the gateway decides which X-Forwarded-For to trust
        "timeout_graceful_shutdown": 10,
        "server_header": False,
    }


class DrainingServer(uvicorn.Server):
    """uvicorn's server, plus: the moment shutdown begins (SIGTERM), background workers stop
    taking new work and hand back what they hold (Runtime.stopping), while in-flight requests
    drain. Another replica picks the work up at once instead of this one claiming jobs it can
    no longer finish (e.g. the payment processor reports through this server's own port,
    already closed). Long-lived connections (the gateway's WebSockets and event streams) are
    closed by their owner first (`drain_connections`: WebSockets with 1001 "going away",
    api-contracts §9.6), before uvicorn would close them its own way."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        stop_background_work()
        await drain_connections()
        await super().shutdown(sockets)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="paysys serve")
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--port", type=int)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--reload", action="store_true")
    args = parser.parse_args(argv)
    run(args.service, args.port, args.reload, args.host)


if __name__ == "__main__":
    main()
