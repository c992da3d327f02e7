"""`paysys check health` and `paysys api ...` against the five services as real processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from paysys.cli.main import app
from tests.support.cli import flat, seeded_database, wait_for
from tests.support.servers import RedisServer, Stack, free_port

runner = CliRunner()
ENV_BY_SERVICE = {
    "gateway": "GATEWAY_URL",
    "auth": "AUTH_SERVICE_URL",
    "payments": "PAYMENTS_SERVICE_URL",
    "admin": "ADMIN_SERVICE_URL",
    "profile": "PROFILE_SERVICE_URL",
}


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's own redis-server: the drill below stops it without touching the run's."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("cli-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def private_db() -> Iterator[str]:
    """This module's own database, migrated and seeded (the run's database stays untouched)."""
    with seeded_database("cli_api") as url:
        yield url


@pytest.fixture(scope="module")
def private_stack(
    tmp_path_factory: pytest.TempPathFactory, private_redis: RedisServer, private_db: str
) -> Iterator[Stack]:
    """A private stack (generous auth rate limit: these tests log in several times)."""
    env = {k: v for k, v in os.environ.items() if k != "PORT"}
    extra = {
        "AUTH_RATE_LIMIT_MAX": "1000",
        "REDIS_URL": private_redis.url,
        "DATABASE_URL": private_db,
    }
    stack = Stack.build(env, tmp_path_factory.mktemp("cli-stack"), extra_env=extra)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def running(private_stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Stack:
    """The command line finds the stack through the usual variables; a private `.paysys/`."""
    for name, var in ENV_BY_SERVICE.items():
        monkeypatch.setenv(var, private_stack.url(name))
    monkeypatch.setenv("DATABASE_URL", private_stack.base_env["DATABASE_URL"])
    monkeypatch.setenv("PAYSYS_STATE_DIR", str(tmp_path / ".paysys"))
    return private_stack


def test_check_health_all_one_and_failures(
    running: Stack, monkeypatch: pytest.MonkeyPatch, private_redis: RedisServer
) -> None:
    result = runner.invoke(app, ["check", "health"])
    assert result.exit_code == 0, result.output
    assert "5/5 healthy" in result.output
    for name in ENV_BY_SERVICE:
        assert name in result.output
    assert result.output.count("ready") >= 5

    one = runner.invoke(app, ["check", "health", "auth"])
    assert one.exit_code == 0 and "1/1 healthy" in one.output

    assert runner.invoke(app, ["check", "health", "nope"]).exit_code == 2

    # Redis down: every service still serves, so it stays ready but degraded (api-contracts §7,
    # revision 2), naming the failing check; the command agrees with the readiness probe (200)
    # and exits 0. (Results are shared for 1 s, hence the wait.)
    private_redis.stop()
    try:
        # Each process shares its result for 1 s, so they turn degraded within a second of each
        # other: wait for all five, then look at one answer as a whole.
        wait_for(
            lambda: "5 degraded" in flat(runner.invoke(app, ["check", "health"]).output),
            10,
            "every service degraded",
        )
        down = runner.invoke(app, ["check", "health"])
        assert down.exit_code == 0, down.output
        assert "redis down" in flat(down.output) and "not_ready" not in down.output
        assert "5/5 healthy, 5 degraded" in flat(down.output)
    finally:
        private_redis.start()
    # ...and they recover by themselves, without a restart.
    wait_for(
        lambda: "degraded" not in runner.invoke(app, ["check", "health"]).output,
        30,
        "recovery after Redis",
    )
    assert runner.invoke(app, ["check", "health"]).exit_code == 0

    monkeypatch.setenv("PROFILE_SERVICE_URL", f"http://127.0.0.1:{free_port()}")
    partial = runner.invoke(app, ["check", "health"])
    assert partial.exit_code == 1
    assert "unreachable" in partial.output and "4/5 healthy" in partial.output


def test_api_register_login_create_and_list(running: Stack, tmp_path: Path) -> None:
    assert runner.invoke(app, ["db", "seed"]).exit_code == 0
    token = tmp_path / ".paysys" / "token"

    missing = runner.invoke(app, ["api", "payments-list"])
    assert missing.exit_code == 1 and "no token yet" in missing.output

    registered = runner.invoke(app, ["api", "register", "--name", "Cli User"])
    assert registered.exit_code == 0, registered.output
    assert "POST /api/auth/register → 201" in registered.output
    assert token.exists() and token.stat().st_mode & 0o077 == 0
    first = token.read_text()

    logged_in = runner.invoke(app, ["api", "login"])
    assert logged_in.exit_code == 0, logged_in.output
    assert "customer@example.com" in logged_in.output
    assert token.read_text() != first

    created = runner.invoke(
        app,
        [
            "api",
            "payments-create",
            "--amount",
            "12.34",
            "--description",
            "cli e2e payment",
            "--idempotency-key",
            "cli-e2e-1",
        ],
    )
    assert created.exit_code == 0, created.output
    assert "POST /api/payments → 201" in created.output
    assert '"12.34"' in created.output and "vendor@example.com" in created.output

    listed = runner.invoke(app, ["api", "payments-list", "--limit", "100"])
    assert listed.exit_code == 0, listed.output
    assert "GET /api/payments → 200" in listed.output
    assert "cli e2e payment" in listed.output

    filtered = runner.invoke(app, ["api", "payments-list", "--status", "no-such-status"])
    assert filtered.exit_code == 1 and "VALIDATION_ERROR" in filtered.output

    wrong = runner.invoke(app, ["api", "login", "--password", "WrongPassword123!"])
    assert wrong.exit_code == 1
    assert "→ 401" in wrong.output and "INVALID_CREDENTIALS" in wrong.output

    role = runner.invoke(app, ["api", "register", "--role", "VENDOR"])
    assert role.exit_code == 0, role.output
    assert '"VENDOR"' in role.output


def test_api_reports_an_unreachable_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYSYS_STATE_DIR", str(tmp_path / ".paysys"))
    result = runner.invoke(app, ["api", "login", "--url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert "cannot reach" in result.output
