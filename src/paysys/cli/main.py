"""`paysys`: the one command line for everything a developer does.

Every command of the original workflow has a counterpart here (see README, "Command map").
Sub-command groups live in their own modules and are registered below with one line each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import typer
from rich.console import Console

from paysys import SERVICES
from paysys.cli import api as api_cli
from paysys.cli import checks as checks_cli
from paysys.cli import db as db_cli
from paysys.cli import events as events_cli
from paysys.cli import infra as infra_cli
from paysys.cli import worker as worker_cli
from paysys.cli.typerapp import typer_app

console = Console()

app = typer_app(
    name="paysys",
    help="paysys developer workflow: infrastructure, database, dev servers, build, tests, checks.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
)

# Sub-command groups: one registration line each.
app.add_typer(infra_cli.app, name="infra")
app.add_typer(db_cli.app, name="db")
app.add_typer(checks_cli.app, name="check")
app.add_typer(api_cli.app, name="api")
# (more groups, e.g. `worker` and `events`, are registered below this line)
app.add_typer(worker_cli.app, name="worker")
app.add_typer(events_cli.app, name="events")


SERVICE_HELP = f"One of: {', '.join(SERVICES)}"


def _check_service(service: str | None) -> None:
    if service is not None and service not in SERVICES:
        console.print(f"[red]unknown service {service!r}[/red]; choose from {', '.join(SERVICES)}")
        raise typer.Exit(2)


@app.command()
def serve(
    service: str = typer.Argument(..., help=SERVICE_HELP),
    port: int | None = typer.Option(None, help="Port (default: PORT env or the service's own)"),
    host: str = typer.Option("127.0.0.1", envvar="HOST", help="Interface to bind"),
    reload: bool = typer.Option(False, help="Restart on code changes"),
) -> None:
    """Run one service in the foreground (production-style, no auto-reload by default)."""
    _check_service(service)
    from paysys.cli.serve import run

    run(service, port, reload, host)


@app.command()
def setup() -> None:
    """First-time database setup: apply all migrations, then seed (the seed's backend:setup)."""
    from paysys.core.config import Settings

    settings = Settings()
    db_cli.apply_migrations(settings)
    db_cli.run_seed(settings)


@app.command()
def dev(
    service: str = typer.Argument(None, help=f"{SERVICE_HELP} (default: all five)"),
    reload: bool = typer.Option(True, help="Restart a service when its code changes"),
) -> None:
    """Run all five services (prefixed coloured logs, auto-reload; Ctrl-C stops all), or one.

    Ports come from GATEWAY_URL and the *_SERVICE_URL variables (3000-3004 by default);
    for a single service PORT overrides.
    """
    _check_service(service)
    from paysys.cli import dev as dev_module

    if service:
        dev_module.run_one(service, reload)
        return
    raise typer.Exit(dev_module.run_all(reload))


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


WHEEL_CHECK = """
import sys
sys.path.insert(0, sys.argv[1])
import paysys
assert paysys.__file__.startswith(sys.argv[1]), paysys.__file__
from paysys.core.config import Settings
for name in sys.argv[2:]:
    module = __import__(f"paysys.{name}.app", fromlist=["create_app"])
    app = module.create_app(Settings())
    paths = {getattr(route, "path", None) for route in app.routes}
    assert "/health/ready" in paths, f"{name}: no /health/ready"
    print(f"ok {name}")
"""


@app.command()
def build(
    service: str = typer.Argument(None, help=f"{SERVICE_HELP} (default: all)"),
    out_dir: Path = typer.Option(Path("dist"), help="Where the wheel goes"),
) -> None:
    """Build the wheel and check that each service app imports and starts from it.

    There is one distribution for all services; `paysys build auth` builds it and checks auth.
    """
    _check_service(service)
    names = [service] if service else list(SERVICES)
    command = [*_uv(), "build", "--wheel", "--out-dir", str(out_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        console.print(result.stdout + result.stderr)
        console.print("[red]wheel build failed[/red]")
        raise typer.Exit(1)
    wheel = max(out_dir.glob("paysys-*.whl"), key=lambda p: p.stat().st_mtime)
    members = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in names if f"paysys/{name}/app.py" not in members]
    if missing or "paysys/db/migrations/env.py" not in members:
        console.print(f"[red]wheel lacks[/red] {missing or 'the migrations'}")
        raise typer.Exit(1)
    check = subprocess.run(
        [sys.executable, "-c", WHEEL_CHECK, str(wheel.resolve()), *names],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        console.print(check.stdout + check.stderr)
        console.print("[red]import check failed[/red]")
        raise typer.Exit(1)
    for name in names:
        console.print(f"[green]✔[/green] {name}: imports and builds its app from the wheel")
    console.print(f"built {wheel}")


TEST_GROUPS = ("libs", "e2e")
LIB_AREAS = ("foundation", "core", "events", "settings", "db", "infra", "cli")


def pytest_selection(target: str | None, root: Path = Path("tests")) -> list[str]:
    """The pytest selection for `paysys test [target]`."""
    if target is None:
        return [str(root)]
    if target == "e2e":
        return [str(root / "e2e")]
    if target == "libs":
        files = [root / "unit"]
        for area in LIB_AREAS:
            files += sorted(root.glob(f"integration/test_{area}*.py"))
        return [str(path) for path in files]
    return [str(path) for path in sorted(root.glob(f"*/test_{target}_*.py"))]


@app.command(
    "test",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def test_cmd(
    ctx: typer.Context,
    target: str = typer.Argument(
        None, help=f"{SERVICE_HELP}, libs (shared core) or e2e (default: everything)"
    ),
) -> None:
    """Run tests with pytest: all, one service's, the shared libraries' or the e2e suite.

    Extra arguments go to pytest, e.g. `paysys test auth -x -q`.
    """
    if target is not None and target not in (*SERVICES, *TEST_GROUPS):
        console.print(f"[red]unknown target {target!r}[/red]")
        raise typer.Exit(2)
    paths = pytest_selection(target)
    if not paths:
        console.print(f"no tests for {target} yet")
        raise typer.Exit(1)
    command = [sys.executable, "-m", "pytest", *paths, *ctx.args]
    console.print("$ " + " ".join(command[2:]))
    raise typer.Exit(subprocess.run(command, env=dict(os.environ)).returncode)


if __name__ == "__main__":  # pragma: no cover
    app()
