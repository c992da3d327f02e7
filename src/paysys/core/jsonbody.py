"""The one JSON body reader of every service: malformed JSON is 400 INVALID_JSON, never a 5xx.

Every request body in every service is parsed here: plain endpoints call `read_json`, and
ordinary FastAPI routes get `parse` through `core.routing.JsonBodyRoute`. The reader is
stricter than `json.loads` wherever the standard library is lenient or fails badly:

- UTF-8 only (RFC 8259 §8.1). Invalid UTF-8 is refused, and so is UTF-16/32, which
  `json.loads(bytes)` would guess. A leading UTF-8 byte-order mark is ignored, as RFC 8259
  allows.
- Duplicate object keys are refused (`json.loads` silently keeps the last, so a check could
  read one value and the code use another).
- Nesting deeper than `MAX_DEPTH` is refused. This includes the C scanner's `RecursionError`,
  and also shallower values that would crash later in `json.dumps`, pydantic or jsonb.
- `NaN` and `Infinity` are not JSON and are refused. Numbers that cannot be represented are
  refused too: integers over Python's 4300-digit limit, and floats that overflow to infinity.
- Strings holding NUL (`\\u0000`) or a lone surrogate (`\\ud800`) are refused. PostgreSQL
  cannot store them, so they would otherwise fail later as a 500.

Exact mode (`exact=True`, for bodies that carry money) keeps every non-integer number as
`money.RawNumber`, its literal text, and `NaN`/`Infinity` as `money.NonFinite`, so amounts
never become floats and the money rules can name the offending field.

Size is not checked here: `core.middleware.BodyLimitMiddleware` answers 413 before any body
reaches a reader, so there is one limit.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from paysys.core.errors import AppError, ValidationFailed
from paysys.core.money import NonFinite, RawNumber

MAX_DEPTH = 64
INVALID_JSON_MESSAGE = "Request body is not valid JSON"

# Escapes that may produce a string PostgreSQL cannot store (checked exactly after parsing).
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class InvalidJSON(json.JSONDecodeError):
    """The body is not JSON this API accepts. A `JSONDecodeError`, so FastAPI's own body
    handling reports it as `json_invalid` (→ INVALID_JSON in `core.http`)."""

    def __init__(self, reason: str, doc: str = "", pos: int = 0) -> None:
        super().__init__(reason, doc, pos)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise InvalidJSON("duplicate object key")
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise InvalidJSON("number out of range")
    return value


def _not_json(text: str) -> Any:
    raise InvalidJSON(f"{text} is not JSON")


_STRICT = json.JSONDecoder(
    object_pairs_hook=_object, parse_float=_finite_float, parse_constant=_not_json
)
_EXACT = json.JSONDecoder(
    object_pairs_hook=_object, parse_float=RawNumber, parse_constant=NonFinite
)


def _inspect(value: Any, *, depth: bool, text: bool) -> None:
    """Walk the parsed value (iteratively: no recursion) for nesting and unstorable text."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            if depth and level > MAX_DEPTH:
                raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels")
            for key, child in item.items():
                if text and _UNSTORABLE.search(key):
                    raise InvalidJSON("NUL or lone surrogate in a string")
                stack.append((child, level + 1))
        elif isinstance(item, list):
            if depth and level > MAX_DEPTH:
                raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels")
            stack.extend((child, level + 1) for child in item)
        elif text and isinstance(item, str) and _UNSTORABLE.search(item):
            raise InvalidJSON("NUL or lone surrogate in a string")


def parse(raw: bytes | str, *, exact: bool = False) -> Any:
    """JSON text → value, or `InvalidJSON` for anything api-contracts §1.3 calls malformed."""
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
        value = (_EXACT if exact else _STRICT).decode(text)
    except InvalidJSON:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidJSON(exc.msg, exc.doc, exc.pos) from None
    except RecursionError:
        raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # invalid UTF-8, integers past the digit limit
        raise InvalidJSON(type(exc).__name__) from None
    # Cheap scans of the text decide whether the exact walk is needed at all: a body with
    # fewer opening brackets than MAX_DEPTH cannot nest deeper.
    deep = text.count("[") + text.count("{") > MAX_DEPTH
    suspect = "\\u" in text and _SUSPECT_ESCAPE.search(text) is not None
    if deep or suspect:
        _inspect(value, depth=deep, text=suspect)
    return value


def read_json(raw: bytes, *, exact: bool = False) -> Any:
    """A body an endpoint reads itself: empty → 400 VALIDATION_ERROR (`body` is required),
    malformed → 400 INVALID_JSON."""
    if not raw.strip():
        raise ValidationFailed("body", "is required")
    try:
        return parse(raw, exact=exact)
    except InvalidJSON:
        raise AppError("INVALID_JSON", INVALID_JSON_MESSAGE) from None
