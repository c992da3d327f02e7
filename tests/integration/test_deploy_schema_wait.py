"""deploy/k8s/base/wait_for_schema.py (the pods' init container) against real databases."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from paysys.core.db import drop_database, ensure_database, raw_dsn
from tests.support.deploy import BASE

SCRIPT = BASE / "wait_for_schema.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wait_for_schema", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def scratch_db(settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:  # type: ignore[no-untyped-def]
    url = make_url(settings.database_url).set(database=f"paysys_wait_{uuid.uuid4().hex[:8]}")
    rendered = url.render_as_string(hide_password=False)
    await ensure_database(rendered)
    monkeypatch.setenv("DATABASE_URL", rendered)
    try:
        yield rendered
    finally:
        await drop_database(rendered)


async def set_revision(database_url: str, revision: str) -> None:
    conn = await asyncpg.connect(raw_dsn(database_url))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS alembic_version (version_num varchar(32) PRIMARY KEY)"
        )
        await conn.execute("DELETE FROM alembic_version")
        await conn.execute("INSERT INTO alembic_version VALUES ($1)", revision)
    finally:
        await conn.close()


def test_the_migrated_test_database_is_ready() -> None:
    # The run's database is at head (conftest migrates it): the script exits 0 at once.
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "schema at head" in result.stdout


async def test_waits_for_an_unmigrated_or_older_schema_and_accepts_a_newer_one(
    scratch_db: str,
) -> None:
    module = load_script()
    ready, why = await asyncio.to_thread(module.schema_ready)
    assert (ready, why) == (False, "database not migrated yet")
    await set_revision(scratch_db, "0001_foundation")
    ready, why = await asyncio.to_thread(module.schema_ready)
    assert not ready and why.startswith("schema at 0001_foundation, waiting for")
    # A revision this image does not know is a newer one (code rolled back after an
    # expand-only migration): serve.
    await set_revision(scratch_db, "9999_from_the_future")
    ready, why = await asyncio.to_thread(module.schema_ready)
    assert ready and "newer than this image's head" in why


def test_gives_up_after_its_timeout_when_the_database_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_script()
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/paysys")
    monkeypatch.setenv("WAIT_FOR_SCHEMA_TIMEOUT", "0.3")
    monkeypatch.setenv("WAIT_FOR_SCHEMA_INTERVAL", "0.1")
    assert module.main() == 1
    assert "database unreachable" in capsys.readouterr().out


async def test_the_migration_job_command_makes_the_pods_ready(scratch_db: str) -> None:
    """What the cluster does on a deploy: the Job's command, then the init container's check."""
    import os

    import yaml

    module = load_script()
    assert not (await asyncio.to_thread(module.schema_ready))[0]
    job = yaml.safe_load((BASE / "migrate-job.yaml").read_text())
    (container,) = job["spec"]["template"]["spec"]["containers"]
    paysys = str(Path(sys.executable).with_name(container["command"][0]))
    result = await asyncio.to_thread(
        subprocess.run,
        [paysys, *container["command"][1:]],
        env={**os.environ, "DATABASE_URL": scratch_db},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ready, why = await asyncio.to_thread(module.schema_ready)
    assert ready and why.startswith("schema at head"), why
