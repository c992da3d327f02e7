"""`.env.example` documents every setting, and loading it changes nothing."""

from __future__ import annotations

import re
from pathlib import Path

from paysys.core.config import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def documented() -> set[str]:
    return set(ASSIGNMENT.findall(EXAMPLE.read_text()))


def test_every_setting_is_in_env_example() -> None:
    missing = {name.upper() for name in Settings.model_fields} - documented()
    assert not missing, f"add to .env.example (one commented line each): {sorted(missing)}"


def test_env_example_names_only_real_settings() -> None:
    unknown = documented() - {name.upper() for name in Settings.model_fields}
    assert not unknown, f"not a Settings field: {sorted(unknown)}"


def test_every_setting_has_a_comment() -> None:
    """Each group of assignments sits right under a comment that explains it."""
    lines = EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if ASSIGNMENT.match(line) and not line.startswith("#"):
            above = index - 1
            while (
                above >= 0 and ASSIGNMENT.match(lines[above]) and not lines[above].startswith("#")
            ):
                above -= 1
            assert above >= 0 and lines[above].startswith("#"), f"no comment above {line!r}"


def test_loading_the_example_gives_the_defaults(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    loaded = Settings(_env_file=EXAMPLE)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert loaded.model_dump() == defaults.model_dump()
