"""The studio's pure rules: secret column names, key parsing, loopback hosts, start-up checks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, Text

from paysys.core.config import Settings
from paysys.db.studio import app, auth, tables


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password_hash", True),
        ("refresh_hash", True),
        ("hash", True),
        ("api_token", True),
        ("client_secret", True),
        ("token_version", False),
        ("token_version_at", False),
        ("hashtag", False),
        ("email", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert tables.is_secret(name) is secret


def _view(*columns: Column[Any]) -> tables.TableView:
    table = Table("t", MetaData(), *columns)
    key = tuple(table.primary_key.columns)
    return tables.TableView("t", table, tuple(table.columns), key)


def test_keys_are_parsed_by_column_type_or_refused() -> None:
    view = _view(
        Column("n", Integer, primary_key=True),
        Column("at", DateTime(timezone=True), primary_key=True),
        Column("name", Text, primary_key=True),
    )
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    query = view.one({"n": "7", "at": at.isoformat(), "name": "x"})
    assert query.compile().params == {"n_1": 7, "at_1": at, "name_1": "x"}
    for bad in (
        {"n": "x", "at": at.isoformat(), "name": "x"},
        {"n": "1", "at": "soon", "name": "x"},
    ):
        with pytest.raises(tables.RowNotFound):
            view.one(bad)
    with pytest.raises(tables.RowNotFound):
        view.one({"n": "1"})


def test_a_table_without_a_public_key_or_an_unknown_editable_table_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metadata = MetaData()
    Table("tokens", metadata, Column("api_token", Text, primary_key=True))
    monkeypatch.setattr(tables, "load_models", lambda: metadata)
    with pytest.raises(ValueError, match="public key"):
        tables.table_views()
    metadata = MetaData()
    Table("things", metadata, Column("id", Integer, primary_key=True))
    monkeypatch.setattr(tables, "load_models", lambda: metadata)
    with pytest.raises(ValueError, match="unknown tables"):
        tables.table_views()


def test_show_cuts_long_values_and_formats_json() -> None:
    assert tables.show(None) == ""
    assert tables.show({"b": 1, "a": [True]}) == '{"a": [true], "b": 1}'
    assert tables.show("x" * 100, 10) == "x" * 9 + "…"


def test_loopback_hosts_and_the_secure_cookie() -> None:
    assert app.is_loopback("localhost") and app.is_loopback("127.0.0.1") and app.is_loopback("::1")
    assert not app.is_loopback("0.0.0.0") and not app.is_loopback("studio.example.com")
    development = Settings()
    assert not app.secure_cookie(development, "127.0.0.1")
    assert app.secure_cookie(development, "example.internal")


class _Request:
    def __init__(self, session: dict[str, Any]) -> None:
        self.session = session


async def test_a_session_without_a_valid_user_is_nobody() -> None:
    for session in ({}, {"uid": "not-a-uuid", "ver": 0}, {"uid": str(uuid.uuid4())}):
        assert await auth.current_admin(_Request(session)) is None  # type: ignore[arg-type]
