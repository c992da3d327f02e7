"""System configuration: the `system_config` table, its known keys, validation and reads.

Owned by the admin service (the only writer, through `PUT /api/admin/config`); any service may
read it with `get_value`. Every key is known in advance: the fixed ones in `KEYS`, plus the
per-currency payment limits `payment.minAmount.<CUR>` / `payment.maxAmount.<CUR>` for every
currency of `paysys.core.money` (`spec`). Unknown keys are refused, and a key that was never
set reads as its default.

Values are JSON. Amount keys are decimal **strings** (never floats), validated like request
amounts (§1.3: positive, no exponent, at most 100000000 in the currency's units). The unsuffixed
`payment.minAmount` / `payment.maxAmount` are USD's limits (api-contracts §10: a limit of
"1000.00" must never let 1000 KWD through), stored with two decimals; a per-currency key is
stored with exactly its currency's minor-unit digits (`"1000.000"` KWD, `"1500"` JPY) and
defaults to null (no limit of its own). Which keys bound which currency: `limit_keys_for`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import Text, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from paysys.core import money
from paysys.core.db import Base
from paysys.core.patterns import SPACE

MAX_AMOUNT = Decimal("100000000.00")  # = paysys.core.money.MAX_MAJOR


class SystemConfig(Base):
    __tablename__ = "system_config"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    updated_by: Mapped[uuid.UUID | None] = mapped_column(default=None)


class ConfigValueError(ValueError):
    """A value a key does not accept; the message is the rule (e.g. `must be greater than 0`)."""


# --- validators: raw JSON value -> canonical stored value ------------------------------------


def parse_amount(value: Any) -> Decimal:
    """A JSON number or decimal string → Decimal, by the amount rules of `paysys.core.money`
    (§1.3) with 2 decimals: positive, no exponent, at most 100000000.00."""
    if isinstance(value, float):
        # FastAPI hands JSON numbers over as floats: take the shortest literal that
        # round-trips (what the client wrote for any sensible amount); exponents stay refused.
        value = repr(value)
    try:
        amount = money.parse_face_value(value, 2)
    except money.MoneyError as exc:
        raise ConfigValueError(str(exc)) from None
    if amount <= 0:
        raise ConfigValueError("must be greater than 0")
    if amount > MAX_AMOUNT:
        raise ConfigValueError("must not exceed 100000000.00")
    return amount


def _amount(value: Any) -> str:
    return f"{parse_amount(value):.2f}"


def _currency(value: Any) -> str:
    try:
        return money.parse_currency(value)
    except money.MoneyError as exc:
        raise ConfigValueError(str(exc)) from None


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigValueError("must be true or false")
    return value


def _text(max_length: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ConfigValueError("must be a string")
        if len(value) > max_length:  # as sent, like its schema's maxLength
            raise ConfigValueError(f"must be at most {max_length} characters")
        return value.strip()

    return check


# The JSON Schema of each kind of value (what `PUT /api/admin/config` documents). An amount's
# rules beyond these (at most 2 decimals, > 0, ≤ 100000000.00 as a number of any spelling, and
# minAmount ≤ maxAmount) are the key's own rules of api-contracts §10.
AMOUNT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": rf"^{SPACE}*[0-9]+(\.[0-9]{{1,2}})?{SPACE}*$"},
        {"type": "number", "exclusiveMinimum": 0, "maximum": 100_000_000},
    ],
    "description": "decimal string or number: > 0, at most 2 decimals, ≤ 100000000.00",
}
BOOL_SCHEMA: dict[str, Any] = {"type": "boolean"}


def _text_schema(max_length: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "pattern": r"^[^\x00]*$"}  # no NUL


@dataclass(frozen=True, slots=True)
class ConfigKey:
    key: str
    default: Any
    description: str
    validate: Callable[[Any], Any]
    schema: dict[str, Any]


KEYS: dict[str, ConfigKey] = {
    item.key: item
    for item in (
        ConfigKey(
            "payment.minAmount",
            "0.01",
            "Smallest payment amount accepted (decimal string; enforced by payments)",
            _amount,
            AMOUNT_SCHEMA,
        ),
        ConfigKey(
            "payment.maxAmount",
            "100000000.00",
            "Largest payment amount accepted (decimal string; enforced by payments)",
            _amount,
            AMOUNT_SCHEMA,
        ),
        ConfigKey(
            "payment.defaultCurrency",
            "USD",
            "Currency suggested to clients for new payments (ISO 4217)",
            _currency,
            money.CURRENCY_SCHEMA,
        ),
        ConfigKey(
            "maintenance.enabled",
            False,
            "Announce a maintenance window to clients (informational flag)",
            _bool,
            BOOL_SCHEMA,
        ),
        ConfigKey(
            "maintenance.message",
            "",
            "Message shown to clients during maintenance (at most 500 characters)",
            _text(500),
            _text_schema(500),
        ),
    )
}


# --- payment limits per currency (api-contracts §10) ----------------------------------------

MIN_KEY, MAX_KEY = "payment.minAmount", "payment.maxAmount"
LIMIT_BASES = (MIN_KEY, MAX_KEY)
# The currency the unsuffixed limit keys apply to (and no other).
UNSUFFIXED_CURRENCY = "USD"

Limits = dict[str, tuple[int | None, int | None]]
"""currency → (smallest, largest) amount in its minor units; None: no such limit. A currency
absent from the mapping has no limit beyond the amount rules of §1.3."""


def split_limit_key(key: str) -> tuple[str, str] | None:
    """`payment.maxAmount.KWD` → (`payment.maxAmount`, `KWD`): the form of a per-currency limit
    key, whether or not the suffix is a currency; None for any other key."""
    base, dot, suffix = key.rpartition(".")
    return (base, suffix) if dot and base in LIMIT_BASES else None


def _limit_amount(currency: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None:
            return None  # null unsets the key: the currency has no limit of its own
        if isinstance(value, float):
            value = repr(value)  # as in parse_amount: the literal the client wrote
        try:
            return money.format_minor(money.to_minor(value, currency), currency)
        except money.MoneyError as exc:
            raise ConfigValueError(str(exc)) from None

    return check


@cache
def _currency_limit(base: str, currency: str) -> ConfigKey:
    smallest = base == MIN_KEY
    digits = money.minor_digits(currency)
    return ConfigKey(
        f"{base}.{currency}",
        None,
        f"{'Smallest' if smallest else 'Largest'} {currency} payment amount accepted "
        f"(decimal string with {digits} decimals; null: none of its own"
        + (", the unsuffixed key applies)" if currency == UNSUFFIXED_CURRENCY else ")"),
        _limit_amount(currency),
        _limit_schema(digits),
    )


def _limit_schema(digits: int) -> dict[str, Any]:
    """A per-currency limit: null, or an amount with at most `digits` decimals."""
    decimals = rf"(\.[0-9]{{1,{digits}}})?" if digits else ""
    return {
        "anyOf": [
            {"type": "null"},
            {"type": "string", "pattern": rf"^{SPACE}*[0-9]+{decimals}{SPACE}*$"},
            {"type": "number", "exclusiveMinimum": 0, "maximum": 100_000_000},
        ]
    }


# The per-currency limit keys, as JSON Schema can name them (their values' decimals depend on
# the currency: a rule of §10, stated in the description).
LIMIT_KEY_PATTERN = r"^payment\.(minAmount|maxAmount)\.(" + "|".join(money.CURRENCIES) + r")$"
LIMIT_VALUE_SCHEMA = _limit_schema(money.MAX_DIGITS)


def spec(key: str) -> ConfigKey | None:
    """The definition of `key` (a fixed key or a per-currency limit), None when unknown."""
    known = KEYS.get(key)
    if known is not None:
        return known
    parts = split_limit_key(key)
    if parts is None or parts[1] not in money.CURRENCIES:
        return None
    return _currency_limit(*parts)


def unknown_key_message(key: str) -> str:
    """Why `key` is refused (spec(key) is None)."""
    parts = split_limit_key(key)
    if parts is not None:
        return (
            f"unknown currency {parts[1]!r}: the suffix must be an ISO 4217 code the service "
            "supports, in upper case"
        )
    return "unknown configuration key"


def is_limit_key(key: Any) -> bool:
    """A key whose change may change the limits payments enforces."""
    return isinstance(key, str) and (key in LIMIT_BASES or split_limit_key(key) is not None)


def limit_keys_for(values: dict[str, Any], currency: str) -> tuple[str | None, str | None]:
    """The keys whose values bound `currency` (min, max): its own keys when set, else, for USD
    only, the unsuffixed ones (§10); None where no key applies."""

    def pick(base: str) -> str | None:
        own = f"{base}.{currency}"
        if values.get(own) is not None:
            return own
        return base if currency == UNSUFFIXED_CURRENCY else None

    return pick(MIN_KEY), pick(MAX_KEY)


def effective_limits(values: dict[str, Any]) -> Limits:
    """Effective values of the limit keys (the unsuffixed ones always present) → Limits."""
    currencies = {UNSUFFIXED_CURRENCY}
    for key, value in values.items():
        parts = split_limit_key(key)
        if parts is not None and value is not None and parts[1] in money.CURRENCIES:
            currencies.add(parts[1])
    limits: Limits = {}
    for currency in sorted(currencies):
        low_key, high_key = limit_keys_for(values, currency)
        limits[currency] = (
            None if low_key is None else money.to_minor(values[low_key], currency),
            None if high_key is None else money.to_minor(values[high_key], currency),
        )
    return limits


CONFIG_RULES = (
    "Each value is validated by its key's own rules (api-contracts §10), beyond its schema: "
    "amounts lie in (0, 100000000], the unsuffixed limits have at most 2 decimals, a "
    "per-currency limit `payment.minAmount.<CUR>` / `payment.maxAmount.<CUR>` at most its "
    "currency's minor-unit digits (null unsets it), and the minimum must not exceed the maximum "
    "of the same currency (else 400 VALIDATION_ERROR naming the key). The unsuffixed limits "
    "apply to USD only. Unknown keys: 400 in the map, 404 `CONFIG_KEY_NOT_FOUND` as a path."
)


def _described(key: ConfigKey) -> dict[str, Any]:
    return {**key.schema, "description": key.description}


def config_map_schema() -> dict[str, Any]:
    """`PUT /api/admin/config`: one or more known keys with values of their own schema."""
    return {
        "type": "object",
        "description": "configuration key → new value (all or nothing). " + CONFIG_RULES,
        "properties": {name: _described(key) for name, key in KEYS.items()},
        "patternProperties": {LIMIT_KEY_PATTERN: LIMIT_VALUE_SCHEMA},
        "minProperties": 1,
        "additionalProperties": False,
    }


def any_value_schema() -> dict[str, Any]:
    """`PUT /api/admin/config/{key}`'s `value`: the schema of one of the keys (which one
    depends on the path, which JSON Schema cannot tie to the body: §10)."""
    unique: list[dict[str, Any]] = []
    for schema in [*(key.schema for key in KEYS.values()), LIMIT_VALUE_SCHEMA]:
        if schema not in unique:
            unique.append(schema)
    return {"anyOf": unique, "description": "the value, by the key's own schema and rules"}


def key_schema() -> dict[str, Any]:
    """A configuration key in a path: one of the fixed keys or a per-currency limit."""
    fixed = "|".join(re.escape(name) for name in KEYS)
    return {"type": "string", "pattern": f"(^({fixed})$)|({LIMIT_KEY_PATTERN})"}


def validate(key: str, value: Any) -> Any:
    """The canonical stored value for `key`, or ConfigValueError / KeyError (unknown key)."""
    known = spec(key)
    if known is None:
        raise KeyError(key)
    return known.validate(value)


def check_consistency(values: dict[str, Any]) -> tuple[str, str] | None:
    """Rules across keys on the full set of effective values → (key, message) of the first
    broken one, else None: min ≤ max for the unsuffixed pair and for every currency's
    effective pair (compared in that currency's minor units)."""
    low = Decimal(values[MIN_KEY])
    high = Decimal(values[MAX_KEY])
    if low > high:
        return MIN_KEY, f"must not be greater than {MAX_KEY}"
    for currency, (low_minor, high_minor) in effective_limits(values).items():
        if low_minor is not None and high_minor is not None and low_minor > high_minor:
            low_key, high_key = limit_keys_for(values, currency)
            return str(low_key), f"must not be greater than {high_key}"
    return None


async def get_value(session: AsyncSession, key: str) -> Any | None:
    """The value of `key`: the stored one, else its default; None for an unknown key."""
    known = spec(key)
    if known is None:
        return None
    stored = await session.scalar(select(SystemConfig.value).where(SystemConfig.key == key))
    return known.default if stored is None else stored


async def stored_values(session: AsyncSession) -> dict[str, Any]:
    """The keys that are set (known keys only: a row of a key no longer known is ignored)."""
    rows = (await session.execute(select(SystemConfig.key, SystemConfig.value))).all()
    return {row.key: row.value for row in rows if spec(row.key) is not None}


async def get_values(session: AsyncSession) -> dict[str, Any]:
    """Every fixed key with its effective value (stored or default), plus every per-currency
    limit key that is set."""
    stored = await stored_values(session)
    return {**{key: item.default for key, item in KEYS.items()}, **stored}


async def amount_limits(session: AsyncSession) -> Limits:
    """The payment limits per currency (minor units) — what payments enforces."""
    values = await get_values(session)
    return effective_limits({k: v for k, v in values.items() if is_limit_key(k)})
