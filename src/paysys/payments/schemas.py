"""Request models and query parsing of the payments API (api-contracts §1.2, §1.3, §4)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictStr, ValidationInfo, field_validator
from pydantic import ValidationError as PydanticValidationError
from starlette.datastructures import QueryParams

from paysys.core.errors import AppError, ValidationFailed
from paysys.core.events.catalogue import find_secret_keys
from paysys.core.money import (
    MAX_MAJOR,
    MoneyError,
    NonFinite,
    RawNumber,
    parse_currency,
    parse_decimal,
    to_minor,
)
from paysys.core.querydates import DateRange, parse_range
from paysys.core.schemas import ApiModel
from paysys.payments.states import STATUSES, TYPES

MAX_METADATA_KEYS = 20
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500
MAX_EMAIL = 254
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SIGNIFICANT = re.compile(r"^-?(\d+)(?:\.(\d+))?$")


class CreateInput(ApiModel):
    """POST /api/payments. `amount` is a JSON number or a decimal string (never a float: the
    body is parsed by `paysys.core.jsonbody` in exact mode); it becomes integer minor units here."""

    currency: Any = Field(
        default="USD", validate_default=True, description="ISO 4217 code (lower case accepted)"
    )
    amount: Any = Field(
        description='Decimal string with the currency\'s minor-unit digits ("100.00") or a '
        "JSON number; > 0 and ≤ 100000000.00",
        json_schema_extra={"anyOf": [{"type": "string"}, {"type": "number"}]},
    )
    type: Literal["instant", "scheduled", "recurring"]
    description: StrictStr = Field(min_length=1, max_length=500)
    recipient_id: StrictStr | None = Field(default=None, max_length=36)
    recipient_email: StrictStr | None = Field(default=None, max_length=MAX_EMAIL)
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Flat object: ≤ 20 keys of ≤ 40 characters; string/number/bool values "
        "(strings ≤ 500 characters)",
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
        try:
            return uuid.UUID(value)
        except ValueError:
            raise ValueError("must be a UUID") from None

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
    """PSP event: `{eventId, paymentId, status, pspTransactionId?, failureReason?}`."""

    model_config = {"extra": "ignore", "str_strip_whitespace": True}

    eventId: StrictStr = Field(min_length=1, max_length=255)
    paymentId: uuid.UUID
    status: Literal["pending", "processing", "completed", "failed", "cancelled"]
    pspTransactionId: StrictStr | None = Field(default=None, max_length=255)
    failureReason: StrictStr | None = Field(default=None, max_length=500)


# --- query strings --------------------------------------------------------------------------


def _single(params: QueryParams, allowed: frozenset[str]) -> dict[str, str]:
    """Each known parameter at most once; unknown parameters → 400."""
    values: dict[str, str] = {}
    for key, value in params.multi_items():
        if key not in allowed:
            raise ValidationFailed(key, "unknown query parameter")
        if key in values:
            raise ValidationFailed(key, "must be given once")
        values[key] = value.strip()
    return values


def _int(values: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = values.get(key)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 9:
        raise ValidationFailed(key, f"must be an integer between {low} and {high}")
    number = int(raw)
    if not low <= number <= high:
        raise ValidationFailed(key, f"must be an integer between {low} and {high}")
    return number


def _choice(values: dict[str, str], key: str, choices: tuple[str, ...]) -> str | None:
    raw = values.get(key)
    if not raw:
        return None
    if raw not in choices:
        raise ValidationFailed(key, "must be one of " + ", ".join(choices))
    return raw


def _alias(values: dict[str, str], name: str, alias: str) -> tuple[str | None, str]:
    if values.get(name) and values.get(alias):
        raise ValidationFailed(alias, f"use either {name} or {alias}")
    if values.get(alias):
        return values[alias], alias
    return values.get(name) or None, name


@dataclass(frozen=True, slots=True)
class ListQuery:
    page: int = 1
    limit: int = 10
    sort: str = "createdAt"
    order: str = "desc"
    status: str | None = None
    type: str | None = None
    currency: str | None = None
    dates: DateRange = field(default_factory=lambda: DateRange(None, None))
    # With a currency filter: exact minor units; without: face values as (whole, 1/10000).
    min_minor: int | None = None
    max_minor: int | None = None
    min_face: tuple[int, int] | None = None
    max_face: tuple[int, int] | None = None
    q: str | None = None


LIST_PARAMS = frozenset(
    {
        "page",
        "limit",
        "sort",
        "order",
        "status",
        "type",
        "currency",
        "startDate",
        "endDate",
        "fromDate",
        "toDate",
        "minAmount",
        "maxAmount",
        "q",
    }
)
FACE_DIGITS = 4  # without a currency, bounds may have up to 4 decimals (CLF, UYW)


def _face(key: str, raw: str) -> tuple[int, int]:
    try:
        whole, frac = parse_decimal(raw, FACE_DIGITS)
    except MoneyError as exc:
        raise ValidationFailed(key, str(exc)) from None
    if whole == 0 and frac == 0:
        raise ValidationFailed(key, "must be greater than 0")
    if whole > MAX_MAJOR or (whole == MAX_MAJOR and frac):
        raise ValidationFailed(key, f"must not exceed {MAX_MAJOR}")
    return whole, frac


def _query_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_TEXT = {"type": "string", "maxLength": 64}
# The list query as OpenAPI parameters (parse_list_query reads them by hand, so FastAPI cannot
# derive them): payments' own list and admin's list of all payments.
LIST_QUERY_DOCS = [
    _query_param("page", {"type": "integer", "minimum": 1, "default": 1}, "page number"),
    _query_param(
        "limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "page size"
    ),
    _query_param("sort", {"enum": ["createdAt", "amount", "status"]}, "sort key"),
    _query_param("order", {"enum": ["asc", "desc"]}, "default desc"),
    _query_param(
        "status",
        {"enum": ["pending", "processing", "completed", "failed", "cancelled"]},
        "payment status",
    ),
    _query_param("type", {"enum": ["instant", "scheduled", "recurring"]}, "payment type"),
    _query_param("currency", _TEXT, "ISO 4217 code"),
    _query_param("startDate", _TEXT, "ISO-8601 date or date-time (alias fromDate)"),
    _query_param("endDate", _TEXT, "ISO-8601 date or date-time, a plain date covers the day"),
    _query_param("fromDate", _TEXT, "alias of startDate"),
    _query_param("toDate", _TEXT, "alias of endDate"),
    _query_param("minAmount", _TEXT, "inclusive, validated like amounts"),
    _query_param("maxAmount", _TEXT, "inclusive, validated like amounts"),
    _query_param(
        "q", {"type": "string", "maxLength": 200}, "case-insensitive substring of the description"
    ),
]


def parse_list_query(params: QueryParams, extra: frozenset[str] = frozenset()) -> ListQuery:
    """The payments list query of §1.2/§4 (also used by admin's payments list)."""
    values = _single(params, LIST_PARAMS | extra)
    currency = None
    if values.get("currency"):
        try:
            currency = parse_currency(values["currency"])
        except MoneyError as exc:
            raise ValidationFailed("currency", str(exc)) from None
    start, start_field = _alias(values, "startDate", "fromDate")
    end, end_field = _alias(values, "endDate", "toDate")
    dates = parse_range(start, end, start_field=start_field, end_field=end_field)
    min_minor = max_minor = None
    min_face = max_face = None
    for key in ("minAmount", "maxAmount"):
        raw = values.get(key)
        if not raw:
            continue
        if currency is not None:
            try:
                minor = to_minor(raw, currency)
            except MoneyError as exc:
                raise ValidationFailed(key, str(exc)) from None
            if key == "minAmount":
                min_minor = minor
            else:
                max_minor = minor
        elif key == "minAmount":
            min_face = _face(key, raw)
        else:
            max_face = _face(key, raw)
    if min_minor is not None and max_minor is not None and min_minor > max_minor:
        raise ValidationFailed("minAmount", "must not be greater than maxAmount")
    if min_face is not None and max_face is not None and min_face > max_face:
        raise ValidationFailed("minAmount", "must not be greater than maxAmount")
    q = values.get("q") or None
    if q is not None and len(q) > 200:
        raise ValidationFailed("q", "must be at most 200 characters")
    return ListQuery(
        page=_int(values, "page", 1, 1, 1_000_000),
        limit=_int(values, "limit", 10, 1, 100),
        sort=_choice(values, "sort", ("createdAt", "amount", "status")) or "createdAt",
        order=_choice(values, "order", ("asc", "desc")) or "desc",
        status=_choice(values, "status", STATUSES),
        type=_choice(values, "type", TYPES),
        currency=currency,
        dates=dates,
        min_minor=min_minor,
        max_minor=max_minor,
        min_face=min_face,
        max_face=max_face,
        q=q,
    )


def parse_recipients_query(params: QueryParams) -> tuple[str | None, int]:
    values = _single(params, frozenset({"q", "limit"}))
    q = values.get("q") or None
    if q is not None and len(q) > 100:
        raise ValidationFailed("q", "must be at most 100 characters")
    return q, _int(values, "limit", 100, 1, 100)


def parse_report_query(params: QueryParams) -> tuple[str | None, str | None, str | None, str, str]:
    """(start, end, currency, start_field, end_field) of GET /reports."""
    values = _single(params, frozenset({"startDate", "endDate", "fromDate", "toDate", "currency"}))
    start, start_field = _alias(values, "startDate", "fromDate")
    end, end_field = _alias(values, "endDate", "toDate")
    currency = None
    if values.get("currency"):
        try:
            currency = parse_currency(values["currency"])
        except MoneyError as exc:
            raise ValidationFailed("currency", str(exc)) from None
    return start, end, currency, start_field, end_field
