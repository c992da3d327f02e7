"""Every `paysys` command group is made here, so all share the same safe defaults."""

from __future__ import annotations

from typing import Any

import typer


def typer_app(**options: Any) -> typer.Typer:
    """A Typer app whose crash reports never print local variables: with rich installed, Typer
    shows each frame's locals by default, and a CLI frame can hold a password, a token or a
    database URL with its credentials."""
    return typer.Typer(pretty_exceptions_show_locals=False, **options)
