"""Base request/response models: camelCase on the wire, unknown fields refused, strings trimmed.

The OpenAPI document states what the server enforces (api-contracts §1.3), and a JSON Schema
length counts the string as sent. So a request string's maximum length is checked on the raw
value, before trimming (a 501-character address with a trailing space is refused, as its schema
says), and a string that must not be empty is documented with a pattern requiring one non-blank
character, since trimming turns a blank one into "". Every free-text string also states that it
holds no NUL (the one JSON reader, `core.jsonbody`, refuses NUL: PostgreSQL cannot store it).
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from paysys.core.patterns import SPACE, SPACE_CHARS

NO_NUL = r"^[^\x00]*$"
# An email address as the accounts domain checks it (`paysys.users.accounts.validate_email`,
# after trimming): a local part of 1-64 characters without `@` or blanks, and a host name of at
# least two labels. Stated as a pattern, not `format: email`: emails are trimmed (§1.3), so
# " a@b.co " is accepted, which the `email` format refuses (schemathesis found exactly that).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^{SPACE}*[^@{SPACE_CHARS}\x00]{{1,64}}@{_LABEL}(?:\.{_LABEL})+{SPACE}*$"
EMAIL_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": EMAIL_PATTERN,
    "maxLength": 254,
    "description": "an email address (surrounding blanks are trimmed; compared lower-cased)",
}
# A request's email: the accounts domain checks it (`validate_email`), the document says so.
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=254),
    WithJsonSchema(EMAIL_SCHEMA),
]
NOT_BLANK = rf"^[^\x00]*[^{SPACE_CHARS}\x00][^\x00]*$"
# A path id: documented as a UUID; anything else is simply an absent resource (404, §1.3).
UuidPath = Annotated[str, Path(json_schema_extra={"format": "uuid"})]


def _string_schemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    options = schema.get("anyOf") or [schema]
    return [item for item in options if isinstance(item, dict) and item.get("type") == "string"]


@cache
def _raw_max_lengths(model: type[BaseModel]) -> dict[str, int]:
    """Field name → its documented maxLength (string fields, nullable or not)."""
    properties = model.model_json_schema(by_alias=False).get("properties", {})
    limits = {}
    for name, schema in properties.items():
        lengths = [item["maxLength"] for item in _string_schemas(schema) if "maxLength" in item]
        if lengths:
            limits[name] = max(lengths)
    return limits


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        str_strip_whitespace=True,
    )

    @field_validator("*", mode="before")
    @classmethod
    def _raw_length(cls, value: Any, info: ValidationInfo) -> Any:
        # Only a string that trimming would shorten can pass the trimmed check yet break its
        # documented length (the others meet the field's own validation, e.g. the password
        # policy with its one `details` entry per rule).
        if isinstance(value, str) and info.field_name is not None and value != value.strip():
            limit = _raw_max_lengths(cls).get(info.field_name)
            if limit is not None and len(value) > limit:
                raise PydanticCustomError(
                    "string_too_long",
                    "String should have at most {max_length} characters",
                    {"max_length": limit},
                )
        return value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        for prop in (target.get("properties") or {}).values():
            for item in _string_schemas(prop):
                if not item.keys() & {"pattern", "format", "enum", "const"}:
                    item["pattern"] = NOT_BLANK if item.get("minLength", 0) >= 1 else NO_NUL
        return schema


class ResponseModel(BaseModel):
    """For documenting responses: camelCase aliases, extra fields tolerated."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class PaginationOut(ResponseModel):
    """`pagination` of every list (api-contracts §1.2)."""

    page: int
    limit: int
    total: int
    total_pages: int
    has_more: bool


class ErrorBody(BaseModel):
    code: str = Field(description="UPPER_SNAKE code of api-contracts §1.4")
    message: str
    details: Any = Field(
        default=None, description="Optional; for validation a list of {field, message}"
    )
    requestId: str | None = None


# The one schema of error responses: `core.openapi` puts it into every service's document.
class ErrorEnvelope(BaseModel):
    """The error envelope of api-contracts §1.1: every error response has this shape."""

    model_config = ConfigDict(title="ErrorResponse")
    success: Literal[False]
    error: ErrorBody


def success_envelope(model: Any, title: str) -> type[BaseModel]:
    """`{success: true, data: <model>}` (api-contracts §1.1), for documenting a 2xx body
    (`model`: a response model, or a type such as `list[str]`)."""
    return create_model(
        title,
        __config__=ConfigDict(title=title),
        success=(Literal[True], ...),
        data=(model, ...),
    )
