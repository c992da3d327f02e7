"""Imports every service's models so `Base.metadata` knows all tables (Alembic, studio, tests)."""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

from paysys.core.db import Base

MODEL_MODULES = (
    "paysys.core.events.models",
    "paysys.users.models",
    "paysys.auth.models",
    "paysys.core.sysconfig",
    "paysys.payments.models",
    "paysys.admin.models",
    "paysys.profile.models",
)


def load_models() -> MetaData:
    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real import error inside an existing module
                raise
    return Base.metadata
