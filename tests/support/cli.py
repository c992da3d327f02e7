"""Helpers for the command-line tests: scratch databases, output matching, subprocesses."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from paysys.core.db import drop_database, raw_dsn

PAYSYS = [sys.executable, "-m", "paysys.cli.main"]


def flat(text: str) -> str:
    """Rich wraps long lines at the terminal width: compare on single spaces."""
    return " ".join(text.split())


@contextmanager
def scratch_database(suffix: str) -> Iterator[str]:
    """URL of a private database named after the run's (dropped at the end)."""
    run_db = make_url(os.environ["DATABASE_URL"])
    url = run_db.set(database=f"{run_db.database}_{suffix}"[:63])
    rendered = url.render_as_string(hide_password=False)
    try:
        yield rendered
    finally:
        asyncio.run(drop_database(rendered))


@contextmanager
def seeded_database(suffix: str) -> Iterator[str]:
    """A scratch database migrated and seeded by `paysys setup` (admin@example.com, ...)."""
    with scratch_database(suffix) as url:
        setup = subprocess.run(
            [*PAYSYS, "setup"], env={**os.environ, "DATABASE_URL": url}, capture_output=True
        )
        assert setup.returncode == 0, setup.stdout + setup.stderr
        yield url


async def fetch(url: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(raw_dsn(url))
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout}s")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise
