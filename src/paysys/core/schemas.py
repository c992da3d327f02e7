"""Base request/response models: camelCase on the wire, unknown fields refused, strings trimmed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
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
