"""System configuration: the `system_config` table, its known keys, validation and reads.

Owned by the admin service (the only writer, through `PUT /api/admin/config`); any service may
read it with `get_value`. Every key is known in advance (`KEYS`): unknown keys are refused, and
a key that was never set reads as its default.

Values are JSON. Amount keys are decimal **strings** (never floats), validated like request
amounts (§1.3: positive, at most 2 decimals, no exponent, at most 100000000.00) and stored in a
canonical form with exactly two decimals (`"0.01"`, `"100000000.00"`). They are currency-neutral
bounds on the amount's face value; payments compares them with each payment's amount.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Text, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from paysys.core import money
from paysys.core.db import Base

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
        {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]{1,2})?\s*$"},
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


CONFIG_RULES = (
    "Each value is validated by its key's own rules (api-contracts §10), beyond its schema: "
    "amounts have at most 2 decimals and lie in (0, 100000000.00], and payment.minAmount must "
    "not exceed payment.maxAmount (else 400 VALIDATION_ERROR naming the key). Per-currency "
    "limits `payment.minAmount.<CUR>` / `payment.maxAmount.<CUR>` are keys of the same kind "
    "where the server knows them (GET /api/admin/config lists every known key); an unknown "
    "key is refused."
)


def _described(key: ConfigKey) -> dict[str, Any]:
    return {**key.schema, "description": key.description}


def config_map_schema() -> dict[str, Any]:
    """`PUT /api/admin/config`: one or more known keys with values of their own schema."""
    return {
        "type": "object",
        "description": "configuration key → new value (all or nothing). " + CONFIG_RULES,
        "properties": {name: _described(key) for name, key in KEYS.items()},
        "minProperties": 1,
        "additionalProperties": False,
    }


def any_value_schema() -> dict[str, Any]:
    """`PUT /api/admin/config/{key}`'s `value`: the schema of one of the keys (which one
    depends on the path, which JSON Schema cannot tie to the body: §10)."""
    unique: list[dict[str, Any]] = []
    for key in KEYS.values():
        if key.schema not in unique:
            unique.append(key.schema)
    return {"anyOf": unique, "description": "the value, by the key's own schema and rules"}


def key_schema() -> dict[str, Any]:
    """A configuration key in a path: one of the known keys."""
    return {"type": "string", "enum": list(KEYS)}


def validate(key: str, value: Any) -> Any:
    """The canonical stored value for `key`, or ConfigValueError / KeyError (unknown key)."""
    return KEYS[key].validate(value)


def check_consistency(values: dict[str, Any]) -> tuple[str, str] | None:
    """Rules across keys on the full set of effective values → (key, message) of the first
    broken one, else None."""
    low = Decimal(values["payment.minAmount"])
    high = Decimal(values["payment.maxAmount"])
    if low > high:
        return "payment.minAmount", "must not be greater than payment.maxAmount"
    return None


async def get_value(session: AsyncSession, key: str) -> Any | None:
    """The value of `key`: the stored one, else its default; None for an unknown key."""
    known = KEYS.get(key)
    if known is None:
        return None
    stored = await session.scalar(select(SystemConfig.value).where(SystemConfig.key == key))
    return known.default if stored is None else stored


async def get_values(session: AsyncSession) -> dict[str, Any]:
    """Every known key with its effective value (stored or default)."""
    rows = (await session.execute(select(SystemConfig.key, SystemConfig.value))).all()
    stored: dict[str, Any] = {row.key: row.value for row in rows}
    return {key: stored.get(key, item.default) for key, item in KEYS.items()}


async def amount_limits(session: AsyncSession) -> tuple[Decimal, Decimal]:
    """(payment.minAmount, payment.maxAmount) as Decimals — what payments enforces."""
    rows = (
        await session.execute(
            select(SystemConfig.key, SystemConfig.value).where(
                SystemConfig.key.in_(("payment.minAmount", "payment.maxAmount"))
            )
        )
    ).all()
    stored: dict[str, Any] = {row.key: row.value for row in rows}
    low = stored.get("payment.minAmount", KEYS["payment.minAmount"].default)
    high = stored.get("payment.maxAmount", KEYS["payment.maxAmount"].default)
    return Decimal(low), Decimal(high)
