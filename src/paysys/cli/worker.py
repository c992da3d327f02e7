"""`paysys worker <service>`: a service's background work without HTTP.

Runs exactly the workers the service's app would start in its lifespan (the outbox relay, the
service's event consumer, and its other workers such as the payment processor), so they can be
scaled separately from the HTTP processes. SIGTERM / Ctrl-C stop it gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Callable

import typer

from paysys import SERVICES
from paysys.cli.typerapp import typer_app
from paysys.core.config import Settings, get_settings
from paysys.core.runtime import Worker

app = typer_app(
    help="Run a service's background workers (outbox relay, event consumer, ...) without HTTP.",
    no_args_is_help=True,
    # `paysys worker auth --metrics-port 9100`: options may follow the service name.
    context_settings={"allow_interspersed_args": True},
    subcommand_metavar="",
)


def service_workers(service: str, settings: Settings) -> tuple[Settings, list[Worker]]:
    """The workers a service's app declares (`app.state.workers`), and its settings."""
    from paysys.core.events.relay import run_relay

    module = importlib.import_module(f"paysys.{service}.app")
    service_app = module.create_app(settings)
    workers = getattr(service_app.state, "workers", None) or [run_relay]
    return service_app.state.settings, list(workers)


async def run_workers(
    service: str,
    settings: Settings | None = None,
    *,
    relay: bool = True,
    ready: asyncio.Event | None = None,
) -> None:
    """Start the service's workers and run until SIGTERM/SIGINT (or `stopping` is set)."""
    from paysys.core.events.relay import run_relay
    from paysys.core.logging import configure_logging, get_logger
    from paysys.core.runtime import Runtime

    # No HTTP here: a PORT/HOST in the environment is not this process's, so the payment
    # processor reports to PAYMENTS_SERVICE_URL (or PAYMENTS_WEBHOOK_URL) instead.
    base = (settings or get_settings()).model_copy(update={"port": None, "host": None})
    service_settings, workers = service_workers(service, base)
    if not relay:
        workers = [w for w in workers if w is not run_relay]
    configure_logging(
        f"{service}-worker", service_settings.log_level, json_output=service_settings.is_production
    )
    log = get_logger("paysys.worker")
    runtime = Runtime.create(service_settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, runtime.stopping.set)
    names = [getattr(w, "__qualname__", repr(w)) for w in workers]
    runtime.start_workers(workers)
    log.info("worker started", service=service, workers=names)
    if ready is not None:
        ready.set()
    try:
        await runtime.stopping.wait()
    finally:
        await runtime.close()
        log.info("worker stopped", service=service)


@app.callback(invoke_without_command=True)
def worker(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}"),
    relay: bool = typer.Option(True, "--relay/--no-relay", help="Also run the outbox relay"),
    metrics_port: int | None = typer.Option(
        None, help="Serve Prometheus /metrics on this port (loopback)"
    ),
) -> None:
    """Run SERVICE's relay, event consumer and other background workers until stopped."""
    if service not in SERVICES:
        typer.echo(f"unknown service {service!r}; choose from {', '.join(SERVICES)}", err=True)
        raise typer.Exit(2)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    with contextlib.suppress(ImportError):  # uvloop ships with uvicorn[standard]
        import uvloop

        loop_factory = uvloop.new_event_loop
    typer.echo(f"paysys worker {service}: starting (Ctrl-C to stop)", err=True)
    with asyncio.Runner(loop_factory=loop_factory) as runner:  # no global policy change
        runner.run(run_workers(service, relay=relay))
    typer.echo(f"paysys worker {service}: stopped", err=True)


if __name__ == "__main__":  # pragma: no cover
    app()
