"""paysys.core.money: parsing and formatting rules (§1.3) and round-trip properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paysys.core import jsonbody, money
from paysys.core.money import (
    CURRENCIES,
    MoneyError,
    RawNumber,
    format_minor,
    max_minor,
    parse_currency,
    to_minor,
)

codes = st.sampled_from(sorted(CURRENCIES))


@given(codes, st.data())
def test_format_then_parse_round_trips(currency: str, data: st.DataObject) -> None:
    minor = data.draw(st.integers(min_value=1, max_value=max_minor(currency)))
    text = format_minor(minor, currency)
    assert to_minor(text, currency) == minor
    assert to_minor(RawNumber(text), currency) == minor  # the same literal as a JSON number
    digits = CURRENCIES[currency]
    assert ("." in text) == (digits > 0)
    if digits:
        assert len(text.split(".")[1]) == digits


@given(codes, st.data())
def test_parse_then_format_is_canonical(currency: str, data: st.DataObject) -> None:
    digits = CURRENCIES[currency]
    whole = data.draw(st.integers(min_value=0, max_value=money.MAX_MAJOR - 1))
    frac_len = data.draw(st.integers(min_value=0, max_value=digits))
    frac = data.draw(st.text("0123456789", min_size=frac_len, max_size=frac_len))
    literal = f"{whole}.{frac}" if frac else str(whole)
    value = Decimal(literal)
    if value == 0:
        with pytest.raises(MoneyError, match="greater than 0"):
            to_minor(literal, currency)
        return
    minor = to_minor(literal, currency)
    assert Decimal(format_minor(minor, currency)) == value
    assert money.to_decimal(minor, currency) == value


@given(codes, st.integers(min_value=1, max_value=6), st.data())
def test_too_many_decimals_always_refused(currency: str, extra: int, data: st.DataObject) -> None:
    digits = CURRENCIES[currency]
    frac = data.draw(st.text("0123456789", min_size=digits + extra, max_size=digits + extra))
    with pytest.raises(MoneyError):
        to_minor(f"1.{frac}", currency)


@given(st.integers(min_value=-(10**20), max_value=0))
def test_non_positive_integers_refused(n: int) -> None:
    with pytest.raises(MoneyError, match="greater than 0"):
        to_minor(n, "USD")


def test_json_numbers_never_become_floats() -> None:
    parsed = jsonbody.parse(b'{"a": 0.1, "b": 1e3, "c": 5, "d": NaN}', exact=True)
    assert parsed["a"] == RawNumber("0.1") and isinstance(parsed["c"], int)
    assert isinstance(parsed["d"], money.NonFinite)
    assert not any(isinstance(v, float) for v in parsed.values())
    assert to_minor(parsed["a"], "USD") == 10
    with pytest.raises(MoneyError, match="exponent"):
        to_minor(parsed["b"], "USD")
    with pytest.raises(MoneyError, match="finite"):
        to_minor(parsed["d"], "USD")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0.1, "not a float"),
        (True, "decimal number"),
        (None, "decimal number"),
        (Decimal("NaN"), "finite"),
        ("inf", "finite"),
        ("-0.5", "greater than 0"),
        ("-abc", "decimal number"),
        ("1.5e2", "exponent"),
        (".5", "decimal number"),
        ("5.", "decimal number"),
        ("+5", "decimal number"),
        ("1" * 41, "must not exceed"),
        ("\u0661\u0660\u0660", "decimal number"),  # Arabic-Indic 100: int() would read it
        ("1\uff10", "decimal number"),  # fullwidth 0
        ("\u00b2", "decimal number"),
    ],
)
def test_refused_inputs(value: object, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        to_minor(value, "USD")


def test_examples_and_limits() -> None:
    assert to_minor(Decimal("12.30"), "USD") == 1230
    assert format_minor(1500, "JPY") == "1500"
    assert format_minor(1, "KWD") == "0.001"
    assert format_minor(-250, "USD") == "-2.50"
    assert to_minor("100000000", "JPY") == 100_000_000
    with pytest.raises(MoneyError):
        to_minor("100000000.001", "KWD")
    assert money.face_value_minor(Decimal("1.005"), "USD", round_up=True) == 101
    assert money.face_value_minor(Decimal("1.005"), "USD", round_up=False) == 100
    assert money.minor_digits("CLF") == 4


def test_currencies() -> None:
    assert parse_currency(" usd ") == "USD"
    for bad in ("XYZ", "US", "", 840, None, "XAU"):
        with pytest.raises(MoneyError):
            parse_currency(bad)
    assert CURRENCIES["JPY"] == 0 and CURRENCIES["BHD"] == 3 and CURRENCIES["EUR"] == 2


# -- face values (amounts compared across currencies) -------------------------------------------


@given(codes, st.data())
def test_face_units_are_exact_for_every_currency(currency: str, data: st.DataObject) -> None:
    """A bound without a currency and a row's amount meet in the same integer units: a row is
    within `minAmount=X` exactly when its face value is ≥ X."""
    minor = data.draw(st.integers(min_value=1, max_value=max_minor(currency)))
    face = format_minor(minor, currency)
    units = money.parse_face_units(face)
    assert units == minor * 10 ** (money.FACE_DIGITS - CURRENCIES[currency])
    assert Decimal(units).scaleb(-money.FACE_DIGITS) == money.to_decimal(minor, currency)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "greater than 0"),
        ("0.0000", "greater than 0"),
        ("100000000.0001", "must not exceed 100000000"),
        ("1.00001", "at most 4 decimal places"),
        ("-1", "greater than 0"),
        ("1e3", "exponent"),
    ],
)
def test_face_unit_bounds_refused(value: str, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        money.parse_face_units(value)


def test_face_values_and_their_sql() -> None:
    assert money.parse_face_units("100000000") == 100_000_000 * 10**money.FACE_DIGITS
    assert money.parse_face_value("12.5", 2) == Decimal("12.50")
    assert money.parse_face_value(7, 2) == Decimal("7.00")
    sql = money.face_units_sql("p.amount", "p.currency")
    assert sql.startswith("(p.amount * (CASE ") and sql.endswith("ELSE 100 END))")
    assert "WHEN p.currency IN ('BIF', 'CLP'," in sql and "THEN 10000" in sql
    assert money.face_units_sql("p.amount", "p.currency") is sql  # built once
