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


# --- per-currency limits (api-contracts §10) --------------------------------------------------


def test_limit_key_form() -> None:
    assert sysconfig.split_limit_key("payment.maxAmount.KWD") == ("payment.maxAmount", "KWD")
    assert sysconfig.split_limit_key("payment.minAmount.xyz") == ("payment.minAmount", "xyz")
    for key in ("payment.maxAmount", "payment.defaultCurrency", "payment.KWD", "maxAmount.KWD"):
        assert sysconfig.split_limit_key(key) is None, key
    assert sysconfig.is_limit_key("payment.minAmount")
    assert sysconfig.is_limit_key("payment.maxAmount.JPY")
    assert not sysconfig.is_limit_key("maintenance.enabled")
    assert not sysconfig.is_limit_key(None)


def test_spec_knows_every_supported_currency_and_nothing_else() -> None:
    item = sysconfig.spec("payment.maxAmount.KWD")
    assert item is not None and item.key == "payment.maxAmount.KWD" and item.default is None
    assert "KWD" in item.description and "3 decimals" in item.description
    usd = sysconfig.spec("payment.minAmount.USD")
    assert usd is not None and "unsuffixed" in usd.description
    assert sysconfig.spec("payment.minAmount") is sysconfig.KEYS["payment.minAmount"]
    for key in (
        "payment.maxAmount.XYZ",  # not ISO 4217
        "payment.maxAmount.kwd",  # codes are upper case in keys
        "payment.maxAmount.XAU",  # a metal, not payable here
        "payment.maxAmount.",
        "payment.maxAmount.KWD.x",
        "payment.defaultCurrency.KWD",
    ):
        assert sysconfig.spec(key) is None, key
        with pytest.raises(KeyError):
            validate(key, "1")
    assert "ISO 4217" in sysconfig.unknown_key_message("payment.maxAmount.XYZ")
    assert sysconfig.unknown_key_message("nope") == "unknown configuration key"


@pytest.mark.parametrize(
    ("key", "raw", "stored"),
    [
        ("payment.maxAmount.KWD", "1000", "1000.000"),
        ("payment.maxAmount.KWD", RawNumber("1000.5"), "1000.500"),
        ("payment.maxAmount.KWD", " 0.001 ", "0.001"),
        ("payment.minAmount.JPY", 1500, "1500"),
        ("payment.minAmount.EUR", 12.5, "12.50"),
        ("payment.maxAmount.CLF", "1.2345", "1.2345"),
        ("payment.maxAmount.KWD", "100000000.000", "100000000.000"),
        ("payment.maxAmount.KWD", None, None),  # null unsets
    ],
)
def test_currency_limit_canonical(key, raw, stored) -> None:  # type: ignore[no-untyped-def]
    assert validate(key, raw) == stored


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("payment.maxAmount.KWD", "1.0001", "at most 3 decimal places for KWD"),
        ("payment.maxAmount.JPY", "1.5", "whole number"),
        ("payment.maxAmount.USD", "1.001", "at most 2 decimal places"),
        ("payment.maxAmount.KWD", "0", "greater than 0"),
        ("payment.maxAmount.KWD", "-1", "greater than 0"),
        ("payment.maxAmount.KWD", "100000000.001", "must not exceed"),
        ("payment.maxAmount.KWD", "1e3", "exponent"),
        ("payment.maxAmount.KWD", True, "decimal"),
        ("payment.maxAmount.KWD", [], "decimal"),
        ("payment.maxAmount.KWD", "NaN", "finite"),
    ],
)
def test_currency_limit_refuses(key, raw, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigValueError, match=message):
        validate(key, raw)


def _defaults() -> dict:  # type: ignore[type-arg]
    return {k: v.default for k, v in sysconfig.KEYS.items()}


def test_unsuffixed_limits_apply_to_usd_only() -> None:
    values = {**_defaults(), "payment.minAmount": "5.00", "payment.maxAmount": "1000.00"}
    limits = sysconfig.effective_limits(values)
    assert limits == {"USD": (500, 100000)}  # KWD, JPY…: no limit of the config
    values["payment.maxAmount.KWD"] = "2000.000"
    values["payment.minAmount.JPY"] = "100"
    values["payment.minAmount.EUR"] = None  # unset keys count for nothing
    assert sysconfig.effective_limits(values) == {
        "JPY": (100, None),
        "KWD": (None, 2000000),
        "USD": (500, 100000),
    }
    # USD's own keys take precedence over the unsuffixed ones.
    values["payment.maxAmount.USD"] = "50.00"
    assert sysconfig.effective_limits(values)["USD"] == (500, 5000)
    assert sysconfig.limit_keys_for(values, "USD") == ("payment.minAmount", "payment.maxAmount.USD")
    assert sysconfig.limit_keys_for(values, "EUR") == (None, None)


def test_min_not_above_max_per_currency() -> None:
    values = _defaults()
    ok = {**values, "payment.minAmount.KWD": "1.000", "payment.maxAmount.KWD": "1.000"}
    assert sysconfig.check_consistency(ok) is None
    # Compared in minor units of the currency, not as text.
    broken = {**values, "payment.minAmount.KWD": "10.000", "payment.maxAmount.KWD": "9.999"}
    assert sysconfig.check_consistency(broken) == (
        "payment.minAmount.KWD",
        "must not be greater than payment.maxAmount.KWD",
    )
    # One side per currency is fine; for USD the other side is the unsuffixed key.
    assert sysconfig.check_consistency({**values, "payment.minAmount.JPY": "99999999"}) is None
    usd = {**values, "payment.maxAmount": "10.00", "payment.minAmount.USD": "10.01"}
    assert sysconfig.check_consistency(usd) == (
        "payment.minAmount.USD",
        "must not be greater than payment.maxAmount",
    )
    # A KWD max below the USD min is no conflict: different currencies.
    cross = {**values, "payment.minAmount": "50.00", "payment.maxAmount.KWD": "1.000"}
    assert sysconfig.check_consistency(cross) is None
