"""The OpenAPI schemas state exactly what the validators enforce (api-contracts §1.3): each
documented pattern, enum or length agrees with its validator on accepted and refused inputs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import Field
from pydantic import ValidationError as PydanticValidationError

from paysys.core import money, sysconfig
from paysys.core.openapi import PUBLIC, rewrite_error_responses
from paysys.core.passwords import PASSWORD_SCHEMA, password_problems
from paysys.core.patterns import SPACE
from paysys.core.schemas import EMAIL_PATTERN, NO_NUL, NOT_BLANK, ApiModel
from paysys.payments.schemas import CreateInput, WebhookInput, parse_create
from paysys.profile import validation as v
from paysys.profile.schemas import PreferencesUpdate, ProfileUpdate


def _matches(pattern: str, value: str) -> bool:
    return re.search(pattern, value) is not None  # JSON Schema patterns are not anchored


@pytest.mark.parametrize(
    "raw",
    [
        "+14155550100",
        " +1 (415) 555-0100",
        "+44.20.7183.8750",
        "+12345678",
        "+123456789012345",
        "",
        "+1234567",
        "+1234567890123456",
        "+0412345678",
        "+1-415-CALL",
        "++14155550100",
        "+1/415/5550100",
    ],
)
def test_phone_pattern_is_the_validator(raw: str) -> None:
    try:
        v.normalize_phone(raw.strip())
        accepted = True
    except ValueError:
        accepted = False
    assert _matches(v.PHONE_PATTERN, raw) is accepted


@pytest.mark.parametrize(
    "raw", ["en", "en-US", "zh-Hant-TW", "es-419", "en_US", "", "e", "en-", "en-USA1", "en US"]
)
def test_language_pattern_is_the_validator(raw: str) -> None:
    try:
        v.normalize_language(raw)
        accepted = True
    except ValueError:
        accepted = False
    assert _matches(v.BCP47_PATTERN, raw) is accepted


@pytest.mark.parametrize(
    "password",
    [
        "Contract-Pass-1",
        "aaaaaaaaaaA1!",
        "ÄÖÜäöü123456!",  # no A-Z / a-z: refused by both
        "ÉÉÉÉaaaa1111!",  # no A-Z
        "Abcdefghijk1é",  # é is the "other" character
        "Abcdefghijk1²",  # ² is "other", not a digit
        "Abcdefghijkl²!",  # no 0-9
        "Short1!a",
        "A" * 60 + "a" * 60 + "1!" + "x" * 10,
        "Abcdefghijk1\n",
        "Abcdefghijk1\x00",  # NUL: refused by the JSON reader, so not in the pattern
    ],
)
def test_password_pattern_is_the_policy(password: str) -> None:
    schema = PASSWORD_SCHEMA
    documented = schema["minLength"] <= len(password) <= schema["maxLength"] and _matches(
        schema["pattern"], password
    )
    accepted = password_problems(password) == [] and "\x00" not in password
    assert documented is accepted


class _Sample(ApiModel):
    name: str = Field(min_length=1, max_length=5)
    note: str | None = Field(default=None, max_length=3)


def test_lengths_are_checked_on_the_raw_string() -> None:
    assert _Sample.model_validate({"name": " ab "}).name == "ab"
    with pytest.raises(PydanticValidationError, match="at most 5 characters"):
        _Sample.model_validate({"name": "abcd  "})  # 6 as sent, 4 once trimmed
    with pytest.raises(PydanticValidationError, match="at most 3 characters"):
        _Sample.model_validate({"name": "a", "note": " abc"})
    with pytest.raises(PydanticValidationError):
        _Sample.model_validate({"name": "   "})  # blank: refused, as the pattern says
    properties = _Sample.model_json_schema()["properties"]
    assert properties["name"]["pattern"] == NOT_BLANK
    assert properties["note"]["anyOf"][0]["pattern"] == NO_NUL
    assert _matches(NOT_BLANK, " a ") and not _matches(NOT_BLANK, " \x00 ")


@pytest.mark.parametrize("value", ["USD", "usd", " uSd ", "JPY", "kwd", "AAA", "US", "USDX", ""])
def test_currency_pattern_is_parse_currency(value: str) -> None:
    try:
        money.parse_currency(value)
        accepted = True
    except money.MoneyError:
        accepted = False
    assert _matches(money.CURRENCY_SCHEMA["pattern"], value) is accepted


@pytest.mark.parametrize("value", ["UTC", " Europe/Paris ", "Etc/GMT+5", "utc", "Europe/Atlantis"])
def test_timezone_pattern_is_the_validator(value: str) -> None:
    try:
        v.validate_timezone(value.strip())
        accepted = True
    except ValueError:
        accepted = False
    assert _matches(v.timezone_pattern(), value) is accepted
    preferences = PreferencesUpdate.model_json_schema(by_alias=True)["properties"]
    assert preferences["currency"]["anyOf"][0]["pattern"] == money.CURRENCY_PATTERN
    assert preferences["timezone"]["anyOf"][0]["pattern"] == v.timezone_pattern()


def test_profile_fields_are_clearable_with_blank_strings() -> None:
    phone = ProfileUpdate.model_json_schema(by_alias=True)["properties"]["phoneNumber"]
    assert [item.get("pattern") for item in phone["anyOf"][:2]] == [v.PHONE_PATTERN, f"^{SPACE}*$"]
    assert ProfileUpdate.model_validate({"phoneNumber": "  "}).phone_number is None


def test_payment_create_schema_states_its_rules() -> None:
    schema = CreateInput.model_json_schema(by_alias=True)
    assert schema["additionalProperties"] is False
    assert [branch["required"] for branch in schema["oneOf"]] == [
        ["recipientId"],
        ["recipientEmail"],
    ]
    props = schema["properties"]
    assert props["recipientEmail"]["pattern"] == EMAIL_PATTERN
    assert props["recipientId"]["format"] == "uuid"
    assert props["metadata"]["maxProperties"] == 20
    body = {"amount": "1.00", "type": "instant", "description": "x"}
    # `format: uuid` is the canonical form only
    for bad in ("0" * 32, "{12345678-1234-1234-1234-123456789abc}"):
        with pytest.raises(Exception, match="UUID"):
            parse_create({**body, "recipientId": bad})
    uid = "12345678-1234-1234-1234-123456789abc"
    assert str(parse_create({**body, "recipientId": uid}).recipient_uuid) == uid


def test_webhook_refuses_unknown_fields() -> None:
    event = {"eventId": "e1", "paymentId": "12345678-1234-1234-1234-123456789abc"}
    with pytest.raises(PydanticValidationError, match="Extra inputs"):
        WebhookInput.model_validate({**event, "status": "completed", "extra": 1})


def test_config_schemas_come_from_the_keys() -> None:
    schema = sysconfig.config_map_schema()
    assert set(schema["properties"]) == set(sysconfig.KEYS)
    assert schema["additionalProperties"] is False and schema["minProperties"] == 1
    # the per-currency limits: every supported currency, exactly (a value's own digits: §10)
    [(pattern, value_schema)] = schema["patternProperties"].items()
    key_pattern = sysconfig.key_schema()["pattern"]
    for key in ("payment.maxAmount.KWD", "payment.minAmount.JPY", *sysconfig.KEYS):
        assert re.search(key_pattern, key), key
    for key in ("payment.maxAmount.KWD", "payment.minAmount.JPY"):
        assert re.search(pattern, key) and sysconfig.spec(key) is not None
    for key in ("payment.maxAmount.kwd", "payment.maxAmount.XYZ", "x"):
        assert sysconfig.spec(key) is None
        assert not re.search(pattern, key) and not re.search(key_pattern, key), key
    assert {"type": "null"} in value_schema["anyOf"]
    assert sysconfig._limit_schema(0)["anyOf"][1]["pattern"] == f"^{SPACE}*[0-9]+{SPACE}*$"
    assert sysconfig.BOOL_SCHEMA in sysconfig.any_value_schema()["anyOf"]
    text = sysconfig.KEYS["maintenance.message"]
    assert text.validate(" hello ") == "hello"
    with pytest.raises(sysconfig.ConfigValueError):
        text.validate("x" * 500 + " ")  # 501 as sent


def test_operations_need_a_bearer_token_unless_public() -> None:
    app = FastAPI()

    @app.get("/private")
    def private() -> dict[str, Any]:  # pragma: no cover - documented, never called
        return {}

    @app.post("/public", openapi_extra=PUBLIC)
    def public() -> dict[str, Any]:  # pragma: no cover - documented, never called
        return {}

    doc = rewrite_error_responses(app.openapi())
    assert doc["paths"]["/private"]["get"]["security"] == [{"bearerAuth": []}]
    assert doc["paths"]["/public"]["post"]["security"] == []
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


@pytest.mark.parametrize(
    "email",
    [" A@b.co ", "a@b.c", "first.last+tag@sub.example.com", "x@b", "a b@c.de", "a@-b.de", "@b.de"],
)
def test_email_pattern_is_the_validator(email: str) -> None:
    from paysys.core.errors import AppError
    from paysys.core.schemas import EMAIL_SCHEMA
    from paysys.users.accounts import validate_email

    try:
        validate_email(email)
        accepted = True
    except AppError:
        accepted = False
    assert _matches(EMAIL_SCHEMA["pattern"], email) is accepted
