"""`python -m paysys.cli.serve <service> [--port N] [--reload]`: run one service under uvicorn.

Kept free of Typer so a service process imports as little as possible.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

import paysys
from paysys import SERVICES

PACKAGE_DIR = Path(paysys.__file__).parent

DEFAULT_PORTS = {"gateway": 3000, "auth": 3001, "payments": 3002, "admin": 3003, "profile": 3004}


def run(
    service: str, port: int | None = None, reload: bool = False, host: str = "127.0.0.1"
) -> None:
    if service not in SERVICES:
        raise SystemExit(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    chosen = port or int(os.environ.get("PORT") or DEFAULT_PORTS[service])
    uvicorn.run(
        f"paysys.{service}.app:create_app",
        factory=True,
        host=host,
        port=chosen,
        reload=reload,
        reload_dirs=[str(PACKAGE_DIR)] if reload else None,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # the gateway decides which X-Forwarded-For to trust
        timeout_graceful_shutdown=10,
        server_header=False,
    )


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
