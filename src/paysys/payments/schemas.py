"""Request models and query parsing of the payments API (api-contracts §1.2, §1.3, §4)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictStr, ValidationInfo, field_validator
from pydantic import ValidationError as PydanticValidationError

from paysys.core.errors import AppError, ValidationFailed
from paysys.core.events.catalogue import find_secret_keys
from paysys.core.money import (
    CURRENCY_SCHEMA,
    MoneyError,
    NonFinite,
    RawNumber,
    parse_currency,
    parse_decimal,
    parse_face_units,
    to_minor,
)
from paysys.core.patterns import SPACE
from paysys.core.querydates import DATE_DESCRIPTION, QUERY_DATE, DateRange, parse_range
from paysys.core.querymodel import Constraint, Integer, Omitted, OneOf, QueryModel, Text
from paysys.core.schemas import EMAIL_PATTERN, EMAIL_SCHEMA, NO_NUL, ApiModel
from paysys.payments.states import STATUSES, TYPES

MAX_METADATA_KEYS = 20
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500
MAX_EMAIL = 254
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_EMAIL_RE = re.compile(EMAIL_PATTERN)  # the accounts domain's rule, as documented
_SIGNIFICANT = re.compile(r"^-?(\d+)(?:\.(\d+))?$")


# What JSON Schema can say of an amount: a positive decimal string without sign or exponent, or a
# positive JSON number up to the maximum. The currency's minor-unit digits and the configured
# per-currency limits are rules of api-contracts §10 (the operation's description names them).
AMOUNT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": rf"^{SPACE}*[0-9]+(\.[0-9]+)?{SPACE}*$"},
        {"type": "number", "exclusiveMinimum": 0, "maximum": 100_000_000},
    ]
}
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_METADATA_KEYS,
    "propertyNames": {"minLength": 1, "maxLength": MAX_METADATA_KEY, "pattern": NO_NUL},
    "additionalProperties": {
        "anyOf": [
            {"type": "string", "maxLength": MAX_METADATA_VALUE, "pattern": NO_NUL},
            {"type": "number"},
            {"type": "boolean"},
        ]
    },
}
CREATE_RULES = (
    "Rules JSON Schema cannot state (api-contracts §10), each a 400 VALIDATION_ERROR: the "
    "amount has at most the currency's minor-unit digits and lies within its currency's "
    "limits (config keys `payment.minAmount.<CUR>`/`payment.maxAmount.<CUR>`; the unsuffixed "
    "keys apply to USD only; a currency without keys has no limit beyond the schema's; "
    "`amount: must not exceed <max> <CUR>` or `must be at least`); the recipient is not the "
    "caller and is active; metadata keys that look like secrets are refused; decimal metadata "
    "numbers have at most 15 significant digits. An unknown recipient is 404 RECIPIENT_NOT_FOUND."
)


class CreateInput(ApiModel):
    """POST /api/payments. `amount` is a JSON number or a decimal string (never a float: the
    body is parsed by `paysys.core.jsonbody` in exact mode); it becomes integer minor units here."""

    model_config = {
        "json_schema_extra": {
            "oneOf": [
                {"required": ["recipientId"], "properties": {"recipientId": {"type": "string"}}},
                {
                    "required": ["recipientEmail"],
                    "properties": {"recipientEmail": {"type": "string"}},
                },
            ]
        }
    }

    currency: Any = Field(default="USD", validate_default=True, json_schema_extra=CURRENCY_SCHEMA)
    amount: Any = Field(
        description='Decimal string with the currency\'s minor-unit digits ("100.00") or a '
        "JSON number; > 0 and ≤ 100000000.00",
        json_schema_extra=AMOUNT_SCHEMA,
    )
    type: Literal["instant", "scheduled", "recurring"]
    description: StrictStr = Field(min_length=1, max_length=500)
    recipient_id: StrictStr | None = Field(
        default=None,
        json_schema_extra={"format": "uuid"},
        description="give exactly one of recipientId and recipientEmail",
    )
    recipient_email: StrictStr | None = Field(
        default=None, max_length=MAX_EMAIL, json_schema_extra=EMAIL_SCHEMA
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Flat object: ≤ 20 keys of ≤ 40 characters; string/number/bool values "
        "(strings ≤ 500 characters)",
        json_schema_extra=METADATA_SCHEMA,
    )

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, value: Any) -> str:
        try:
            return parse_currency(value)
        except MoneyError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> Any:
        currency = info.data.get("currency")
        if currency is None:  # the currency already failed: report that one only
            return 0
        try:
            return to_minor(value, currency)
        except MoneyError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("recipient_id", mode="after")
    @classmethod
    def _recipient_id(cls, value: str | None) -> Any:
        if value is None:
            return None
        if not UUID_RE.match(value):  # the canonical form only, as `format: uuid` says
            raise ValueError("must be a UUID")
        return uuid.UUID(value)

    @field_validator("recipient_email", mode="after")
    @classmethod
    def _recipient_email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.lower()
        if not _EMAIL_RE.match(value):
            raise ValueError("must be an email address")
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("must be an object")
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"must have at most {MAX_METADATA_KEYS} keys")
        clean: dict[str, Any] = {}
        for key, item in value.items():
            if not key or len(key) > MAX_METADATA_KEY:
                raise ValueError(f"keys must be 1-{MAX_METADATA_KEY} characters")
            if find_secret_keys({key: None}):
                raise ValueError(f"{key}: secret-looking keys are not allowed in metadata")
            clean[key] = _metadata_value(key, item)
        return clean

    @property
    def recipient_uuid(self) -> uuid.UUID | None:
        return self.recipient_id  # type: ignore[return-value]


def _metadata_value(key: str, item: Any) -> Any:
    if isinstance(item, bool):
        return item
    if isinstance(item, str):
        if len(item) > MAX_METADATA_VALUE:
            raise ValueError(f"{key}: must be at most {MAX_METADATA_VALUE} characters")
        return item
    if isinstance(item, int):
        if abs(item) >= 10**15:
            raise ValueError(f"{key}: number is too large")
        return item
    if isinstance(item, RawNumber) and not isinstance(item, NonFinite):
        # Free-form (non-money) data: decimals of at most 15 significant digits, which a
        # JSON double carries exactly. Money never passes through here.
        match = _SIGNIFICANT.match(item.text)
        if not match or len((match.group(1) + (match.group(2) or "")).lstrip("0")) > 15:
            raise ValueError(f"{key}: must be a plain number of at most 15 digits")
        return float(Decimal(item.text))
    raise ValueError(f"{key}: values must be strings, numbers or booleans")


def validation_failed(exc: PydanticValidationError) -> AppError:
    """Pydantic errors → 400 VALIDATION_ERROR in the shape of core.http."""
    from fastapi.exceptions import RequestValidationError

    from paysys.core.http import validation_error

    return validation_error(RequestValidationError(exc.errors()))


def parse_create(body: Any) -> CreateInput:
    if not isinstance(body, dict):
        raise ValidationFailed("body", "must be a JSON object")
    try:
        data = CreateInput.model_validate(body)
    except PydanticValidationError as exc:
        raise validation_failed(exc) from None
    if (data.recipient_id is None) == (data.recipient_email is None):
        raise ValidationFailed("recipientId", "give exactly one of recipientId or recipientEmail")
    return data


class StatusInput(ApiModel):
    status: Literal["pending", "processing", "completed", "failed", "cancelled"]
    reason: StrictStr | None = Field(default=None, max_length=500)

    @field_validator("reason", mode="after")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        return value or None  # trimmed by ApiModel; "" means no reason


class CancelInput(ApiModel):
    reason: StrictStr | None = Field(default=None, max_length=500)

    @field_validator("reason", mode="after")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        return value or None


class WebhookInput(BaseModel):
    """PSP event: `{eventId, paymentId, status, pspTransactionId?, failureReason?}`; unknown
    fields are refused like in every body (api-contracts §1.3)."""

    model_config = {"extra": "forbid", "str_strip_whitespace": True}

    eventId: StrictStr = Field(min_length=1, max_length=255)
    paymentId: uuid.UUID
    status: Literal["pending", "processing", "completed", "failed", "cancelled"]
    pspTransactionId: StrictStr | None = Field(default=None, max_length=255)
    failureReason: StrictStr | None = Field(default=None, max_length=500)


# --- query strings --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurrencyCode(Constraint):
    """An ISO 4217 code of `paysys.core.money` (any case) → upper case."""

    def check(self, value: str) -> str:
        if not _CURRENCY_RE.match(value):
            raise ValueError("must be an ISO 4217 currency code")
        try:
            return parse_currency(value)
        except MoneyError as exc:
            raise ValueError(str(exc)) from None

    def schema(self) -> dict[str, Any]:
        return {
            "pattern": CURRENCY_SCHEMA["pattern"],
            "description": CURRENCY_SCHEMA["description"],
        }


@dataclass(frozen=True, slots=True)
class AmountText(Constraint):
    """An amount bound as written: a positive decimal without sign or exponent. Its decimals
    and range are checked with the currency filter (`PaymentListQuery.to_list_query`)."""

    def check(self, value: str) -> str:
        try:
            parse_decimal(value, MAX_AMOUNT_TEXT)  # the rules of money, with its messages
        except MoneyError as exc:
            raise ValueError(str(exc)) from None
        if not _AMOUNT_RE.match(value):
            raise ValueError("must be a decimal number")
        return value

    def schema(self) -> dict[str, Any]:
        return {"pattern": _AMOUNT_RE.pattern, "maxLength": MAX_AMOUNT_TEXT}


_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}$")
_AMOUNT_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")
MAX_AMOUNT_TEXT = 40
_CURRENCY_DOC = "ISO 4217 code, any case (an active code with a minor unit, as in money.py)"
_AMOUNT_DOC = (
    "inclusive bound, > 0 and ≤ 100000000; with `currency`: validated like that currency's "
    "amounts (at most its decimals), without: a face value (≤ 4 decimals) compared with each "
    "payment in its own currency"
)
_START_DOC = "from this moment (a plain date: its 00:00Z); " + DATE_DESCRIPTION
_END_DOC = "up to this moment (a plain date: its whole UTC day); " + DATE_DESCRIPTION


class DateFilters(QueryModel):
    """`startDate`/`endDate` and their aliases `fromDate`/`toDate` (one of each pair)."""

    start_date: Annotated[str, QUERY_DATE] | Omitted = Field(
        None, alias="startDate", description=_START_DOC
    )
    end_date: Annotated[str, QUERY_DATE] | Omitted = Field(
        None, alias="endDate", description=_END_DOC
    )
    from_date: Annotated[str, QUERY_DATE] | Omitted = Field(
        None, alias="fromDate", description="alias of startDate (give one of them)"
    )
    to_date: Annotated[str, QUERY_DATE] | Omitted = Field(
        None, alias="toDate", description="alias of endDate (give one of them)"
    )

    def bounds(self) -> tuple[tuple[str | None, str], tuple[str | None, str]]:
        """((start, its parameter name), (end, its parameter name))."""
        return (
            _either(self.start_date, "startDate", self.from_date, "fromDate"),
            _either(self.end_date, "endDate", self.to_date, "toDate"),
        )

    def dates(self) -> DateRange:
        (start, start_field), (end, end_field) = self.bounds()
        return parse_range(start, end, start_field=start_field, end_field=end_field)


def _either(
    value: str | None, name: str, alias: str | None, alias_name: str
) -> tuple[str | None, str]:
    if value is not None and alias is not None:
        raise ValidationFailed(alias_name, f"use either {name} or {alias_name}")
    if alias is not None:
        return alias, alias_name
    return value, name


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The payments list's filters, sort and page, as the queries need them."""

    page: int = 1
    limit: int = 10
    sort: str = "createdAt"
    order: str = "desc"
    status: str | None = None
    type: str | None = None
    currency: str | None = None
    dates: DateRange = field(default_factory=lambda: DateRange(None, None))
    # Inclusive amount bounds: minor units of `currency` when it is set (exact), else face units
    # (money.parse_face_units) compared with each payment in its own currency.
    min_amount: int | None = None
    max_amount: int | None = None
    q: str | None = None


class PaymentListQuery(DateFilters):
    """The query of GET /api/payments and GET /api/admin/payments (api-contracts §1.2, §4)."""

    page: Annotated[int, Integer(1, 1_000_000)] = Field(1, description="page number")
    limit: Annotated[int, Integer(1, 100)] = Field(10, description="page size")
    sort: Annotated[str, OneOf("createdAt", "amount", "status")] = Field(
        "createdAt", description="sort key (ties broken by createdAt, then id)"
    )
    order: Annotated[str, OneOf("asc", "desc")] = Field("desc", description="sort order")
    status: Annotated[str, OneOf(*STATUSES)] | Omitted = Field(None, description="payment status")
    type: Annotated[str, OneOf(*TYPES)] | Omitted = Field(None, description="payment type")
    currency: Annotated[str, CurrencyCode()] | Omitted = Field(None, description=_CURRENCY_DOC)
    min_amount: Annotated[str, AmountText()] | Omitted = Field(
        None, alias="minAmount", description=_AMOUNT_DOC
    )
    max_amount: Annotated[str, AmountText()] | Omitted = Field(
        None, alias="maxAmount", description=_AMOUNT_DOC
    )
    q: Annotated[str, Text(200)] | Omitted = Field(
        None, description="case-insensitive substring of the description (taken literally)"
    )

    def to_list_query(self) -> ListQuery:
        """The rules between parameters: one date of each pair, start before end, amounts by
        the currency filter's rules, minAmount ≤ maxAmount (else 400)."""
        dates = self.dates()
        bounds: dict[str, int | None] = {"minAmount": None, "maxAmount": None}
        for name, raw in (("minAmount", self.min_amount), ("maxAmount", self.max_amount)):
            if raw is None:
                continue
            try:
                if self.currency is not None:
                    bounds[name] = to_minor(raw, self.currency)
                else:
                    bounds[name] = parse_face_units(raw)
            except MoneyError as exc:
                raise ValidationFailed(name, str(exc)) from None
        low, high = bounds["minAmount"], bounds["maxAmount"]
        if low is not None and high is not None and low > high:
            raise ValidationFailed("minAmount", "must not be greater than maxAmount")
        plain = ("page", "limit", "sort", "order", "status", "type", "currency")
        return ListQuery(
            **{name: getattr(self, name) for name in plain},
            dates=dates,
            min_amount=low,
            max_amount=high,
            q=self.q or None,
        )


class RecipientsQuery(QueryModel):
    """The query of GET /api/payments/recipients."""

    q: Annotated[str, Text(100)] | Omitted = Field(
        None, description="case-insensitive substring of the name or email (taken literally)"
    )
    limit: Annotated[int, Integer(1, 100)] = Field(100, description="at most this many users")


class ReportQuery(DateFilters):
    """The query of GET /api/payments/reports (default period: the 30 days up to now)."""

    currency: Annotated[str, CurrencyCode()] | Omitted = Field(None, description=_CURRENCY_DOC)
