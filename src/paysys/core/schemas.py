"""Base request/response models: camelCase on the wire, unknown fields refused, strings trimmed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        str_strip_whitespace=True,
    )


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
