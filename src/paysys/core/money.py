"""Money: ISO 4217 currencies, parsing request amounts into integer minor units, formatting back.

Amounts live as integers of the currency's minor unit (cents for USD, yen for JPY, fils for
KWD) in a BIGINT column next to a `char(3)` currency. This module is the only place that
converts between that integer and the decimal string of the API (api-contracts §1.3):

- a request amount is a JSON number or a decimal string (`"100.00"`, `100.5`, `1500`);
- at most as many decimals as the currency has minor-unit digits (`"1.5"` is fine for USD,
  `"1.555"` is not; JPY takes no decimals at all);
- zero, negative, NaN/Infinity, exponent notation (`1e3`), non-numeric strings, booleans and
  anything above 100000000.00 (in the currency's own units) are refused;
- the answer always has exactly the currency's minor-unit digits (`"100.00"`, `"1500"`).

Floats never appear: JSON numbers reach this module as their literal text (`RawNumber`, made
by `core.jsonbody`'s exact mode) or as Python ints, and all arithmetic is on ints.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache
from typing import Any

from paysys.core.patterns import SPACE

# ISO 4217 active alphabetic codes → number of minor-unit digits (list of 2024, with XCG of
# 2025). Funds/metals without a minor unit (XAU, XDR, XXX, …) are not payable and left out.
_TABLE = """
AED 2 AFN 2 ALL 2 AMD 2 ANG 2 AOA 2 ARS 2 AUD 2 AWG 2 AZN 2 BAM 2 BBD 2 BDT 2 BGN 2 BHD 3
BIF 0 BMD 2 BND 2 BOB 2 BOV 2 BRL 2 BSD 2 BTN 2 BWP 2 BYN 2 BZD 2 CAD 2 CDF 2 CHE 2 CHF 2
CHW 2 CLF 4 CLP 0 CNY 2 COP 2 COU 2 CRC 2 CUP 2 CVE 2 CZK 2 DJF 0 DKK 2 DOP 2 DZD 2 EGP 2
ERN 2 ETB 2 EUR 2 FJD 2 FKP 2 GBP 2 GEL 2 GHS 2 GIP 2 GMD 2 GNF 0 GTQ 2 GYD 2 HKD 2 HNL 2
HTG 2 HUF 2 IDR 2 ILS 2 INR 2 IQD 3 IRR 2 ISK 0 JMD 2 JOD 3 JPY 0 KES 2 KGS 2 KHR 2 KMF 0
KPW 2 KRW 0 KWD 3 KYD 2 KZT 2 LAK 2 LBP 2 LKR 2 LRD 2 LSL 2 LYD 3 MAD 2 MDL 2 MGA 2 MKD 2
MMK 2 MNT 2 MOP 2 MRU 2 MUR 2 MVR 2 MWK 2 MXN 2 MXV 2 MYR 2 MZN 2 NAD 2 NGN 2 NIO 2 NOK 2
NPR 2 NZD 2 OMR 3 PAB 2 PEN 2 PGK 2 PHP 2 PKR 2 PLN 2 PYG 0 QAR 2 RON 2 RSD 2 RUB 2 RWF 0
SAR 2 SBD 2 SCR 2 SDG 2 SEK 2 SGD 2 SHP 2 SLE 2 SOS 2 SRD 2 SSP 2 STN 2 SVC 2 SYP 2 SZL 2
THB 2 TJS 2 TMT 2 TND 3 TOP 2 TRY 2 TTD 2 TWD 2 TZS 2 UAH 2 UGX 0 USD 2 USN 2 UYI 0 UYU 2
UYW 4 UZS 2 VED 2 VES 2 VND 0 VUV 0 WST 2 XAF 0 XCD 2 XCG 2 XOF 0 XPF 0 YER 2 ZAR 2 ZMW 2
ZWG 2
"""
_PARTS = _TABLE.split()


CURRENCIES: dict[str, int] = {
    code: int(digits) for code, digits in zip(_PARTS[::2], _PARTS[1::2], strict=True)
}
DEFAULT_CURRENCY = "USD"
# The JSON Schema of a currency field (api-contracts §1.3): exactly what `parse_currency`
# accepts, the known codes in any letter case with surrounding blanks, as one pattern (an enum
# cannot say "any case", and a generator would try each of its hundreds of members).
CURRENCY_PATTERN = (
    f"^{SPACE}*(?:"
    + "|".join("".join(f"[{c}{c.lower()}]" for c in code) for code in CURRENCIES)
    + f"){SPACE}*$"
)
CURRENCY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": CURRENCY_PATTERN,
    "description": "ISO 4217 alphabetic code of an active currency, any case (upper-cased): "
    + ", ".join(CURRENCIES),
}
MAX_DIGITS = max(CURRENCIES.values())

# The largest amount accepted, in the currency's own units (api-contracts §1.3: 100000000.00).
MAX_MAJOR = 100_000_000
# ASCII digits only: `\d` would also take Arabic-Indic digits, which int() reads as ASCII ones.
_DECIMAL_RE = re.compile(r"^([0-9]+)(?:\.([0-9]+))?$")
_MAX_TEXT = 40  # longer inputs are refused before any conversion (no giant-int parsing)


class MoneyError(ValueError):
    """A rule of §1.3 that an amount or currency breaks; the message is the rule."""


class RawNumber:
    """A JSON number that is not an integer, kept as its literal text (`1.50`, `1e3`)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"RawNumber({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


class NonFinite(RawNumber):
    """`NaN`, `Infinity` or `-Infinity` literals (not JSON, but accepted by lenient parsers)."""


def parse_currency(value: Any) -> str:
    """An ISO 4217 alphabetic code; lower case accepted and upper-cased; unknown → MoneyError."""
    if not isinstance(value, str):
        raise MoneyError("must be an ISO 4217 currency code")
    code = value.strip().upper()
    if code not in CURRENCIES:
        raise MoneyError("must be an ISO 4217 currency code")
    return code


def minor_digits(currency: str) -> int:
    return CURRENCIES[currency]


def max_minor(currency: str) -> int:
    return MAX_MAJOR * 10 ** CURRENCIES[currency]


def _literal(value: Any) -> str:
    """The decimal literal of an accepted input type, else MoneyError."""
    if isinstance(value, bool):  # bool is an int subclass: refuse it first
        raise MoneyError("must be a decimal number or string")
    if isinstance(value, NonFinite):
        raise MoneyError("must be a finite number")
    if isinstance(value, RawNumber):
        return value.text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise MoneyError("must be a finite number")
        return format(value, "f")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float):
        raise MoneyError("must be given exactly (a decimal string or JSON number), not a float")
    raise MoneyError("must be a decimal number or string")


def parse_decimal(value: Any, digits: int, *, label: str = "") -> tuple[int, int]:
    """(integer part, fractional part scaled to `digits`) of a positive decimal literal."""
    text = _literal(value)
    if len(text) > _MAX_TEXT:
        raise MoneyError("must not exceed 100000000")
    if text.startswith("-"):
        if _DECIMAL_RE.match(text[1:]):
            raise MoneyError("must be greater than 0")
        raise MoneyError("must be a decimal number")
    lowered = text.lower()
    if lowered in {"nan", "+nan", "inf", "+inf", "infinity", "+infinity"}:
        raise MoneyError("must be a finite number")
    match = _DECIMAL_RE.match(text)
    if not match:
        if "e" in lowered and re.match(r"^[+-]?[0-9.]+e[+-]?[0-9]+$", lowered):
            raise MoneyError("must not use exponent notation")
        raise MoneyError("must be a decimal number")
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > digits:
        suffix = f" for {label}" if label else ""
        if digits == 0:
            raise MoneyError(f"must be a whole number (no decimals){suffix}")
        raise MoneyError(f"must have at most {digits} decimal places{suffix}")
    return int(whole), int(frac.ljust(digits, "0")) if digits else 0


def to_minor(value: Any, currency: str) -> int:
    """A request amount → integer minor units of `currency` (already validated), per §1.3."""
    digits = CURRENCIES[currency]
    whole, frac = parse_decimal(value, digits, label=currency)
    minor = whole * 10**digits + frac
    if minor <= 0:
        raise MoneyError("must be greater than 0")
    if minor > max_minor(currency):
        raise MoneyError(f"must not exceed {format_minor(max_minor(currency), currency)}")
    return minor


def format_minor(minor: int, currency: str) -> str:
    """Integer minor units → the API's decimal string with exactly the currency's digits."""
    digits = CURRENCIES[currency]
    if digits == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}"


def to_decimal(minor: int, currency: str) -> Decimal:
    """Minor units → the exact face value as a Decimal (for comparisons with config limits)."""
    return Decimal(minor).scaleb(-CURRENCIES[currency])


def face_value_minor(value: Decimal, currency: str, *, round_up: bool) -> int:
    """A face value (Decimal) → minor units of `currency`, rounded toward the inside of a
    range bound (up for a lower bound, down for an upper bound)."""
    scaled = value.scaleb(CURRENCIES[currency])
    whole = int(scaled)
    if round_up and scaled > whole:
        whole += 1
    return whole


# --- face values: amounts compared across currencies -------------------------------------------
# A bound given without a currency (the payments list's `minAmount`/`maxAmount`) is a face value,
# compared with each row in that row's own currency. Both sides are counted in 1/10^FACE_DIGITS
# of a unit (FACE_DIGITS: the most minor-unit digits any currency has), in which every amount of
# every currency is an exact integer: no rounding, no floats, in Python or in SQL.
FACE_DIGITS = MAX_DIGITS


def parse_face_value(value: Any, digits: int) -> Decimal:
    """A non-negative decimal literal with at most `digits` decimals → its exact value
    (the rules of `parse_decimal`; callers check the range they need)."""
    whole, frac = parse_decimal(value, digits)
    return Decimal(whole) + Decimal(frac).scaleb(-digits)


def parse_face_units(value: Any) -> int:
    """A face value given without a currency → 1/10^FACE_DIGITS units; > 0 and at most
    MAX_MAJOR, with at most FACE_DIGITS decimals."""
    units = int(parse_face_value(value, FACE_DIGITS).scaleb(FACE_DIGITS))
    if units <= 0:
        raise MoneyError("must be greater than 0")
    if units > MAX_MAJOR * 10**FACE_DIGITS:
        raise MoneyError(f"must not exceed {MAX_MAJOR}")
    return units


@cache
def face_units_sql(amount: str, currency: str) -> str:
    """SQL for a row's amount in 1/10^FACE_DIGITS face units: `amount` (minor units) times
    10^(FACE_DIGITS - digits of the row's `currency`), an exact BIGINT (at most 10^12)."""
    by_digits: dict[int, list[str]] = {}
    for code, digits in CURRENCIES.items():
        by_digits.setdefault(digits, []).append(code)
    arms = " ".join(
        f"WHEN {currency} IN ({', '.join(repr(c) for c in sorted(codes))}) "
        f"THEN {10 ** (FACE_DIGITS - digits)}"
        for digits, codes in sorted(by_digits.items())
        if digits != 2
    )
    return f"({amount} * (CASE {arms} ELSE {10 ** (FACE_DIGITS - 2)} END))"
