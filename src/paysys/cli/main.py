"""`paysys`: the one command line for everything a developer does."""

from __future__ import annotations

import typer

from paysys import SERVICES

app = typer.Typer(
    name="paysys",
    help="paysys developer workflow: infrastructure, database, dev servers, build, tests, checks.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.command()
def serve(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}"),
    port: int | None = typer.Option(None, help="Port (default: PORT env or the service's own)"),
    host: str = typer.Option("127.0.0.1", envvar="HOST", help="Interface to bind"),
    reload: bool = typer.Option(False, help="Restart on code changes"),
) -> None:
    """Run one service in the foreground (production-style, no auto-reload by default)."""
    from paysys.cli.serve import run

    run(service, port, reload, host)


if __name__ == "__main__":  # pragma: no cover
    app()
