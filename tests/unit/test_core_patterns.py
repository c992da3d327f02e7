"""The document's whitespace class is exactly Python's (`str.strip()`), in either dialect."""

from __future__ import annotations

import re
import sys

from paysys.core.patterns import SPACE


def test_space_is_exactly_what_str_strip_removes() -> None:
    pattern = re.compile(SPACE)
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        assert bool(pattern.fullmatch(char)) == char.isspace(), hex(code)


def test_no_shorthand_classes_left_in_the_patterns() -> None:
    """`\\s`/`\\S` mean another set to an ECMA-262 reader: every documented pattern uses SPACE."""
    from paysys.core import money, schemas
    from paysys.profile import validation

    for pattern in (
        schemas.EMAIL_PATTERN,
        schemas.NOT_BLANK,
        money.CURRENCY_PATTERN,
        validation.timezone_pattern(),
        validation.PHONE_PATTERN,
    ):
        assert "\\s" not in pattern and "\\S" not in pattern
