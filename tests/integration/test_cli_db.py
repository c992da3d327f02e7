"""`paysys setup` and `paysys db ...` against the run's real PostgreSQL.

Commands that drop or alter a database get their own scratch database (named after the run's),
so the shared test database is never disturbed.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, Table
from typer.testing import CliRunner

from paysys.cli.main import app
from paysys.core.db import Base
from paysys.db import migrate, seed
from tests.support.cli import fetch, flat, scratch_database

runner = CliRunner()


@pytest.fixture
def scratch_db(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[str]:
    """DATABASE_URL of a private database for this test (dropped afterwards)."""
    with scratch_database(request.node.name[5:25].lower()) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        yield url


@pytest.fixture
def probe_table() -> Iterator[Table]:
    """A model with no migration (removed from the metadata afterwards)."""
    table = Table("cli_probe", Base.metadata, Column("id", Integer, primary_key=True))
    try:
        yield table
    finally:
        Base.metadata.remove(table)


def user_count(url: str) -> object:
    return asyncio.run(fetch(url, "SELECT count(*) FROM users"))


def test_setup_migrates_and_seeds_idempotently(scratch_db: str) -> None:
    result = runner.invoke(app, ["setup"])
    assert result.exit_code == 0, result.output
    _, head = migrate.current_and_head(migrate_settings())
    assert f"database at revision {head}" in result.output
    services = [name for name, _ in seed.seed_modules()]
    assert "seeded: " + ", ".join(services) in result.output
    assert "auth" in services  # the seed data of api-contracts §8 starts with the users
    users = asyncio.run(
        fetch(scratch_db, "SELECT string_agg(email, ',' ORDER BY email) FROM users")
    )
    assert users == "admin@example.com,customer@example.com,vendor@example.com"
    before = user_count(scratch_db)

    again = runner.invoke(app, ["db", "seed"])
    assert again.exit_code == 0, again.output
    assert user_count(scratch_db) == before


def migrate_settings():  # type: ignore[no-untyped-def]
    from paysys.core.config import Settings

    return Settings()


def test_seed_refuses_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENV", "production")
    for name in ("JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "PSP_WEBHOOK_SECRET"):
        monkeypatch.setenv(name, name.lower() * 3)
    monkeypatch.setenv("STUDIO_SESSION_SECRET", "s" * 40)
    result = runner.invoke(app, ["db", "seed"])
    assert result.exit_code == 1
    assert "refusing to seed with ENV=production" in result.output
    reset = runner.invoke(app, ["db", "reset", "--yes"])
    assert reset.exit_code == 1
    assert "refusing to reset" in reset.output


def test_seed_skips_services_without_seed_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seed, "SEED_ORDER", ("auth", "nosuchservice"))
    assert [name for name, _ in seed.seed_modules()] == ["auth"]


def test_deploy_applies_pending_only(scratch_db: str) -> None:
    result = runner.invoke(app, ["db", "deploy"])
    assert result.exit_code == 0, result.output
    current = asyncio.run(fetch(scratch_db, "SELECT version_num FROM alembic_version"))
    _, head = migrate.current_and_head(migrate_settings())
    assert current == head
    assert user_count(scratch_db) == 0  # deploy never seeds


def test_validate_passes_when_models_equal_migrations() -> None:
    result = runner.invoke(app, ["db", "validate"])
    assert result.exit_code == 0, result.output
    assert "connected" in result.output
    assert "models and migrations agree" in result.output


def test_validate_fails_on_unmigrated_model(probe_table: Table) -> None:
    result = runner.invoke(app, ["db", "validate"])
    assert result.exit_code == 1
    assert "run `paysys db generate`" in flat(result.output)


def test_validate_fails_without_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = runner.invoke(app, ["db", "validate"])
    assert result.exit_code == 1
    assert "cannot connect to the database" in flat(result.output)


def test_validate_fails_behind_head(scratch_db: str) -> None:
    migrate.upgrade(migrate_settings(), "0001_foundation")
    result = runner.invoke(app, ["db", "validate"])
    assert result.exit_code == 1
    assert "not at head" in flat(result.output)


@pytest.fixture
def private_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the migration history, so generated files never land in the package."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", copy)
    return copy


def test_generate_writes_a_migration_for_model_changes(
    private_migrations: Path, probe_table: Table
) -> None:
    before = set((private_migrations / "versions").glob("*.py"))
    result = runner.invoke(app, ["db", "generate", "-m", "add probe"])
    assert result.exit_code == 0, result.output
    new = set((private_migrations / "versions").glob("*.py")) - before
    assert len(new) == 1
    text = new.pop().read_text()
    assert "add probe" in text and "cli_probe" in text and "create_table" in text


def test_generate_with_nothing_to_do(private_migrations: Path) -> None:
    before = set((private_migrations / "versions").glob("*.py"))
    result = runner.invoke(app, ["db", "generate"])
    assert result.exit_code == 0, result.output
    assert "nothing to generate" in result.output
    assert set((private_migrations / "versions").glob("*.py")) == before


def test_migrate_generates_and_applies(
    scratch_db: str, private_migrations: Path, probe_table: Table
) -> None:
    result = runner.invoke(app, ["db", "migrate", "-m", "probe"])
    assert result.exit_code == 0, result.output
    assert "generated a migration" in result.output
    assert asyncio.run(fetch(scratch_db, "SELECT to_regclass('cli_probe') IS NOT NULL")) is True
    # Now models and migrations agree again.
    again = runner.invoke(app, ["db", "migrate"])
    assert again.exit_code == 0 and "generated" not in again.output


def test_reset_drops_migrates_and_seeds(scratch_db: str) -> None:
    assert runner.invoke(app, ["setup"]).exit_code == 0
    asyncio.run(fetch(scratch_db, "CREATE TABLE leftover (id int)"))
    refused = runner.invoke(app, ["db", "reset"], input="n\n")
    assert refused.exit_code == 1
    assert asyncio.run(fetch(scratch_db, "SELECT to_regclass('leftover') IS NOT NULL")) is True

    result = runner.invoke(app, ["db", "reset"], input="y\n")
    assert result.exit_code == 0, result.output
    assert asyncio.run(fetch(scratch_db, "SELECT to_regclass('leftover') IS NULL")) is True
    assert user_count(scratch_db) == 3

    assert runner.invoke(app, ["db", "reset", "--yes"]).exit_code == 0
    assert user_count(scratch_db) == 3


def test_format_checks_and_formats_migrations(private_migrations: Path) -> None:
    check = runner.invoke(app, ["db", "format", "--check"])
    assert check.exit_code == 0, check.output
    target = private_migrations / "versions" / "0001_foundation.py"
    target.write_text(target.read_text().replace("from __future__", "from  __future__", 1))
    dirty = runner.invoke(app, ["db", "format", "--check"])
    assert dirty.exit_code == 1
    assert "1 file would be reformatted" in dirty.output
    fixed = runner.invoke(app, ["db", "format"])
    assert fixed.exit_code == 0
    assert "from  __future__" not in target.read_text()
