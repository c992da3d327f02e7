"""Config keys: per-key validation into canonical values, cross-key rule."""

from __future__ import annotations

from decimal import Decimal

import pytest

from paysys.core import sysconfig
from paysys.core.money import RawNumber
from paysys.core.sysconfig import ConfigValueError, validate


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("10", "10.00"),
        ("0.01", "0.01"),
        (" 99.9 ", "99.90"),
        (5, "5.00"),
        (RawNumber("12.5"), "12.50"),
        (12.5, "12.50"),
        ("100000000.00", "100000000.00"),
    ],
)
def test_amount_keys_canonical(raw, stored) -> None:  # type: ignore[no-untyped-def]
    assert validate("payment.minAmount", raw) == stored
    assert validate("payment.maxAmount", raw) == stored


@pytest.mark.parametrize(
    "raw",
    [
        "0",
        "0.00",
        "-5",
        "1.234",
        "1e3",
        RawNumber("1e3"),
        1e-7,
        "NaN",
        "abc",
        "",
        True,
        None,
        [],
        {},
        "100000000.01",
        100000001,
    ],
)
def test_amount_keys_refuse(raw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigValueError):
        validate("payment.minAmount", raw)


def test_other_keys() -> None:
    assert validate("payment.defaultCurrency", " gbp ") == "GBP"
    with pytest.raises(ConfigValueError):
        validate("payment.defaultCurrency", "XXX")
    assert validate("maintenance.enabled", False) is False
    with pytest.raises(ConfigValueError):
        validate("maintenance.enabled", 0)
    assert validate("maintenance.message", "  hi ") == "hi"
    with pytest.raises(ConfigValueError):
        validate("maintenance.message", "x" * 501)
    with pytest.raises(ConfigValueError):
        validate("maintenance.message", 5)
    with pytest.raises(KeyError):
        validate("no.such", 1)


def test_defaults_are_valid_and_canonical() -> None:
    for key, item in sysconfig.KEYS.items():
        assert validate(key, item.default) == item.default, key
        assert item.description


def test_min_not_above_max() -> None:
    values = {k: v.default for k, v in sysconfig.KEYS.items()}
    assert sysconfig.check_consistency(values) is None
    assert (
        sysconfig.check_consistency(
            {**values, "payment.minAmount": "10.00", "payment.maxAmount": "10.00"}
        )
        is None
    )
    broken = sysconfig.check_consistency(
        {**values, "payment.minAmount": "10.01", "payment.maxAmount": "10.00"}
    )
    assert broken is not None and broken[0] == "payment.minAmount"
    assert sysconfig.parse_amount("7") == Decimal("7")
