"""`paysys db seed`: the development data of api-contracts §8, idempotent.

Each service that has seed data provides ``paysys.<service>.seed.seed(session)``; they run in
dependency order (auth → profile → payments → admin), each in its own transaction. A service
without a seed module is skipped. Refuses to run with ``ENV=production``.
"""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType

from paysys.core.config import Settings

SEED_ORDER = ("auth", "profile", "payments", "admin")


class SeedRefused(RuntimeError):
    pass


def seed_modules() -> list[tuple[str, ModuleType]]:
    found = []
    for service in SEED_ORDER:
        name = f"paysys.{service}.seed"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (name, f"paysys.{service}"):
                raise  # a real import error inside an existing seed module
            continue
        found.append((service, module))
    return found


async def seed_all(settings: Settings) -> list[str]:
    """Run every available seed; returns the services that were seeded."""
    if settings.is_production:
        raise SeedRefused("refusing to seed with ENV=production")
    from paysys.core.db import create_engine, create_sessionmaker

    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    done = []
    try:
        for service, module in seed_modules():
            async with sessionmaker() as session:
                await module.seed(session)
                await session.commit()
            done.append(service)
    finally:
        await engine.dispose()
    return done


def run(settings: Settings) -> list[str]:
    return asyncio.run(seed_all(settings))
