"""Whitespace in the regular expressions the OpenAPI document shares with the validators.

The server trims strings with Python's `str.strip()`, and Python's `\\s` is that same set; the
document's readers (ECMA-262 regexes, as JSON Schema specifies) have another `\\s`: without
U+001C to U+001F and U+0085, with U+FEFF. A pattern written with `\\s` therefore says one thing to
a client and another to the server (a phone number "\\u001d" is blank, so cleared, here, and
invalid to the document). These classes list Python's whitespace explicitly: the same set in
both dialects (`tests/unit/test_core_patterns.py` checks it against `str.isspace`).
"""

from __future__ import annotations

# Every character for which `str.isspace()` is true, as a character-class body.
SPACE_CHARS = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
SPACE = f"[{SPACE_CHARS}]"  # one whitespace character (Python's `\s`, in both dialects)
