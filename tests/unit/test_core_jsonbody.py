"""core.jsonbody: the one JSON body reader; each malformed class is refused, valid JSON kept."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paysys.core.errors import AppError
from paysys.core.jsonbody import MAX_DEPTH, InvalidJSON, parse, read_json
from paysys.core.money import NonFinite, RawNumber

MALFORMED: dict[str, bytes] = {
    "syntax": b'{"a": ',
    "trailing garbage": b'{"a": 1} x',
    "whitespace only": b"   ",
    "invalid utf-8": b'{"a": "\xff"}',
    "overlong utf-8": b'{"a": "\xc0\xaf"}',
    "utf-16 with bom": '{"a": 1}'.encode("utf-16"),
    "utf-16 without bom": '{"a": 1}'.encode("utf-16-le"),
    "utf-32": '{"a": 1}'.encode("utf-32"),
    "raw nul outside strings": b'{"a":\x001}',
    "raw nul in a string": b'{"a": "x\x00y"}',
    "raw control character": b'{"a": "x\ny"}',
    "escaped nul": b'{"a": "x\\u0000y"}',
    "escaped nul in a key": b'{"x\\u0000": 1}',
    "lone high surrogate": b'{"a": "\\ud800"}',
    "lone low surrogate in a list": b'["ok", "\\uDC00"]',
    "reversed surrogate pair": b'"\\udc00\\ud800"',
    "duplicate keys": b'{"a": 1, "a": 1}',
    "nested duplicate keys": b'{"a": {"b": 1, "b": 2}}',
    "deep arrays (RecursionError)": b"[" * 100_000,
    "deep objects (RecursionError)": b'{"a":' * 100_000,
    "deep but well-formed": b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    "deep objects, well-formed": b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
    "integer past the digit limit": b"1" + b"0" * 5000,
}
NOT_NUMBERS: dict[str, bytes] = {
    "NaN": b'{"a": NaN}',
    "Infinity": b"[Infinity]",
    "-Infinity": b"-Infinity",
    "float overflow": b'{"a": 1e999}',
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("exact", [False, True])
def test_malformed_bodies_are_refused(raw: bytes, exact: bool) -> None:
    with pytest.raises(InvalidJSON):
        parse(raw, exact=exact)
    with pytest.raises(AppError) as caught:
        read_json(raw, exact=exact)
    if raw.strip():
        assert caught.value.code == "INVALID_JSON"
        assert caught.value.message == "Request body is not valid JSON"


@pytest.mark.parametrize("raw", NOT_NUMBERS.values(), ids=NOT_NUMBERS.keys())
def test_non_json_numbers_are_refused_unless_exact(raw: bytes) -> None:
    with pytest.raises(InvalidJSON):
        parse(raw)
    parse(raw, exact=True)  # kept for the money rules: test_exact_mode_keeps_number_literals


def test_exact_mode_keeps_number_literals() -> None:
    value = parse(b'{"a": 0.10, "b": 1e3, "c": 5, "d": NaN, "e": 1e999}', exact=True)
    assert value == {
        "a": RawNumber("0.10"),
        "b": RawNumber("1e3"),
        "c": 5,
        "d": NonFinite("NaN"),
        "e": RawNumber("1e999"),
    }
    assert parse(b'{"a": 0.10}') == {"a": 0.1}


def test_empty_body_is_a_missing_body() -> None:
    for raw in (b"", b" \r\n\t"):
        with pytest.raises(AppError) as caught:
            read_json(raw)
        assert caught.value.code == "VALIDATION_ERROR"
        assert caught.value.details == [{"field": "body", "message": "is required"}]


def test_invalid_json_is_a_json_decode_error() -> None:
    """FastAPI reports a JSONDecodeError from `Request.json()` as `json_invalid`."""
    assert issubclass(InvalidJSON, json.JSONDecodeError)


def test_what_is_accepted() -> None:
    assert parse(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # a UTF-8 BOM is ignored (RFC 8259)
    assert parse('{"é": "ü"}'.encode()) == {"é": "ü"}
    assert parse(b'"\\ud83d\\ude00"') == "\U0001f600"  # a surrogate pair is one character
    assert parse(b'"\\\\u0000"') == "\\u0000"  # an escaped backslash, then text
    assert parse(b'{"a": {"a": 1}}') == {"a": {"a": 1}}  # the same key at two levels
    deepest = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse(deepest) is not None
    many = b"[" + b",".join([b"[]"] * 5000) + b"]"  # many brackets, shallow
    assert len(parse(many)) == 5000
    assert parse("[1]") == [1]


any_text = st.text(st.characters(exclude_categories=()))  # NUL and lone surrogates included
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | any_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(st.characters(exclude_categories=()), max_size=8), children, max_size=4
        )
    ),
    max_leaves=20,
)


def _storable(value: object) -> bool:
    """No string (key or value) holds NUL or a lone surrogate."""
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    return True


@given(json_values)
def test_agrees_with_the_standard_library_on_storable_json(value: object) -> None:
    raw = json.dumps(value).encode()  # ASCII: non-ASCII and surrogates as \u escapes
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        if len(dict(items)) != len(items):
            duplicates.append("yes")
        return dict(items)

    # (An escaped surrogate pair becomes one character here, so two keys can become one.)
    expected = json.loads(raw, object_pairs_hook=pairs)
    if _storable(expected) and not duplicates:
        assert parse(raw) == expected
        assert parse(raw, exact=True) == expected
    else:
        with pytest.raises(InvalidJSON):
            parse(raw)
