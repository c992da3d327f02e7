"""Alembic driven from code: the migration history ships inside the package."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from paysys.core.config import Settings
from paysys.core.db import ensure_database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' must be escaped for ConfigParser interpolation (passwords may contain it).
    config.set_main_option("sqlalchemy.url", settings.async_database_url.replace("%", "%%"))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    asyncio.run(ensure_database(settings.database_url))
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str = "base") -> None:
    command.downgrade(alembic_config(settings), revision)


def check(settings: Settings) -> None:
    """Raises when the models and the migrations disagree (`alembic check`)."""
    command.check(alembic_config(settings))


def generate(settings: Settings, message: str) -> None:
    command.revision(alembic_config(settings), message=message, autogenerate=True)


def current_and_head(settings: Settings) -> tuple[str | None, str | None]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(settings))
    head = script.get_current_head()
    return _current_revision(settings), head


def _current_revision(settings: Settings) -> str | None:
    import asyncpg

    from paysys.core.db import raw_dsn

    async def read() -> str | None:
        conn = await asyncpg.connect(raw_dsn(settings.database_url), timeout=5)
        try:
            exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
            if not exists:
                return None
            value = await conn.fetchval("SELECT version_num FROM alembic_version")
            return str(value) if value is not None else None
        finally:
            await conn.close()

    return asyncio.run(read())
