"""What the studio shows and what it lets change.

Secret columns are recognised by name (`is_secret`) and left out of every query, so no page,
form or error can carry them. Tables are read-only unless listed in `EDITABLE`: a direct write
to users, payments, sessions, the outbox or the audit log would skip the domain rules
(revocation, state machines, events, the audit trail), so the studio has no way to make one.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Select, Table, and_, func, select

from paysys.db.registry import load_models

# password_hash, refresh_hash, previous_hash, *_secret, *_token ... (not token_version).
SECRET_NAME = re.compile(r"password|secret|(^|_)hash$|(^|_)token$")
PAGE_SIZE = 50
LIST_CELL_MAX = 80  # characters of a value shown in a list (the row page shows it all)

# table → the one column its edit form offers; the edit runs the API's domain function
# (`views.EDITORS`). Every other table is read-only.
EDITABLE: Mapping[str, str] = {"system_config": "value"}


def is_secret(column_name: str) -> bool:
    return SECRET_NAME.search(column_name) is not None


class RowNotFound(LookupError):
    """No such row, or a primary key that cannot be one."""


@dataclass(frozen=True, slots=True)
class TableView:
    name: str
    table: Table
    columns: tuple[Column[Any], ...]  # the shown ones: every column but the secrets
    primary_key: tuple[Column[Any], ...]

    @property
    def editable_column(self) -> str | None:
        return EDITABLE.get(self.name)

    @property
    def hidden(self) -> list[str]:
        return [c.name for c in self.table.columns if is_secret(c.name)]

    def page(self, number: int) -> Select[Any]:
        return (
            select(*self.columns)
            .order_by(*self.primary_key)
            .limit(PAGE_SIZE + 1)  # one more tells whether a next page exists
            .offset((number - 1) * PAGE_SIZE)
        )

    def count(self) -> Select[Any]:
        return select(func.count()).select_from(self.table)

    def key_of(self, row: Mapping[str, Any]) -> dict[str, str]:
        """The query parameters that address `row` (its primary key)."""
        return {c.name: str(row[c.name]) for c in self.primary_key}

    def one(self, params: Mapping[str, str]) -> Select[Any]:
        """The row addressed by `params` (query parameters named after the key columns)."""
        conditions = []
        for column in self.primary_key:
            raw = params.get(column.name)
            if raw is None:
                raise RowNotFound(column.name)
            conditions.append(column == _parse_key(column, raw))
        return select(*self.columns).where(and_(*conditions))


def _parse_key(column: Column[Any], raw: str) -> Any:
    kind = column.type.python_type
    try:
        if kind is uuid.UUID:
            return uuid.UUID(raw)
        if kind is int:
            return int(raw)
        if kind is datetime:
            return datetime.fromisoformat(raw)
    except ValueError:
        raise RowNotFound(column.name) from None
    return raw


def table_views() -> dict[str, TableView]:
    """One view per table of every service's models, by table name."""
    views = {}
    for table in sorted(load_models().tables.values(), key=lambda t: t.name):
        key = tuple(table.primary_key.columns)
        if not key or any(is_secret(c.name) for c in key):
            raise ValueError(f"table {table.name}: rows must be addressable by a public key")
        shown = tuple(c for c in table.columns if not is_secret(c.name))
        views[table.name] = TableView(table.name, table, shown, key)
    missing = set(EDITABLE) - set(views)
    if missing:
        raise ValueError(f"EDITABLE names unknown tables: {sorted(missing)}")
    return views


def show(value: Any, limit: int | None = None) -> str:
    """A value as text: JSON for JSON columns, ISO times, '' for NULL; cut at `limit`."""
    if value is None:
        text = ""
    elif isinstance(value, dict | list | bool):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:
        text = str(value)
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text
