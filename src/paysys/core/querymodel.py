"""Query parameters as one pydantic model per endpoint: it validates the query string and, from
the same declarations, documents the OpenAPI parameters.

FastAPI's query-parameter models (`Annotated[Model, Query()]`) do both on ordinary routes, but
only through per-request dependency solving, and a repeated parameter silently keeps its last
value. Here `QueryModel.parse` validates a request's query directly (plain routes validate
without dependency solving; see `core.routing`), and `QueryModel.openapi_parameters` is what
FastAPI documents for `Annotated[Model, Query()]`, for a route's `openapi_extra`.

Every model refuses unknown and repeated parameters and values holding NUL (which PostgreSQL
cannot compare: a 500 otherwise), all 400 `VALIDATION_ERROR`, and trims strings.
The constraint types below validate a value and state the same rule in its JSON schema, so the
document says exactly what is enforced (api-contracts §1.3):
- `Integer(low, high)`: ASCII digits only (`²` or `٣` are refused, though Python's `int()` and
  pydantic's lax integers take some of them), within [low, high];
- `OneOf(*values)`: an enumeration; `Matching(pattern)`: a regular expression of ASCII classes
  (never `\\d`, which is Unicode-aware); `Text(max_length)`: a length limit (and no NUL).
An empty value (`status=`) is a value like any other: refused where the schema refuses it.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Self

from fastapi import Query
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic import ValidationError as PydanticValidationError
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema, core_schema
from starlette.datastructures import QueryParams

from paysys.core.errors import AppError, ValidationFailed

NO_NUL_MESSAGE = "must not contain NUL characters"
NO_NUL_PATTERN = "^[^\\u0000]*$"  # the same rule for JSON Schema (ECMA-262) and `re`

# The type of an optional parameter, `Annotated[str, ...] | Omitted = None`: absent is None,
# and None is never a documented value (a query string cannot send null).
Omitted = SkipJsonSchema[None]


class QueryModel(BaseModel):
    """Base of a query model: declare the parameters as fields (with `alias` for camelCase
    names); parse with `parse`, document with `openapi_parameters`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    @classmethod
    def parse(cls, params: QueryParams) -> Self:
        """The validated query of a request; a parameter given twice, an unknown one or any
        broken rule → 400 VALIDATION_ERROR (the first failing parameter in the message)."""
        names = _names(cls)
        values: dict[str, str] = {}
        for key, value in params.multi_items():
            if key not in names:
                raise ValidationFailed(key, "unknown query parameter")
            if key in values:
                raise ValidationFailed(key, "must be given once")
            if "\x00" in value:  # PostgreSQL cannot hold NUL: refused here, never a 500
                raise ValidationFailed(key, NO_NUL_MESSAGE)
            values[key] = value
        try:
            return cls.model_validate(values)
        except PydanticValidationError as exc:
            raise _validation_failed(exc) from None

    @classmethod
    def openapi_parameters(cls) -> list[dict[str, Any]]:
        """The OpenAPI `parameters` FastAPI documents for `Annotated[cls, Query()]`."""
        return [dict(parameter) for parameter in _parameters(cls)]


@cache
def _names(model: type[QueryModel]) -> frozenset[str]:
    return frozenset(field.alias or name for name, field in model.model_fields.items())


@cache
def _parameters(model: type[QueryModel]) -> tuple[dict[str, Any], ...]:
    def endpoint() -> None:  # pragma: no cover - documented, never called
        pass

    query = inspect.Parameter(
        "query", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[model, Query()]
    )
    endpoint.__signature__ = inspect.Signature([query])  # type: ignore[attr-defined]
    route = APIRoute("/", endpoint, methods=["GET"])
    document = get_openapi(title=model.__name__, version="0", routes=[route])
    parameters: list[dict[str, Any]] = document["paths"]["/"]["get"]["parameters"]
    assert "$ref" not in repr(parameters), "query parameters must not need shared schemas"
    return tuple(parameters)


def _validation_failed(exc: PydanticValidationError) -> AppError:
    from fastapi.exceptions import RequestValidationError

    from paysys.core.http import validation_error  # the one mapping of pydantic errors

    # Query models are flat: an error belongs to its parameter (loc[0]; what follows names the
    # branch of an optional field). A value is never None, so the None branch's complaint
    # ("Input should be None") says nothing.
    errors = [
        {**error, "loc": ("query", *error["loc"][:1])}
        for error in exc.errors()
        if error["type"] != "none_required"
    ]
    return validation_error(RequestValidationError(errors))


# --- constraint types: one rule, validated and stated in the schema --------------------------


@dataclass(frozen=True, slots=True)
class Constraint:
    """Annotated metadata checking a query value (after pydantic's own type) and adding the
    matching keywords to its JSON schema."""

    def check(self, value: Any) -> Any:  # pragma: no cover - every subclass overrides it
        return value

    def schema(self) -> dict[str, Any]:  # pragma: no cover - every subclass overrides it
        return {}

    def wrap(self, inner: CoreSchema) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, inner)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return self.wrap(handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(schema), **self.schema()}


@dataclass(frozen=True, slots=True)
class Integer(Constraint):
    """An integer parameter in [low, high] written with ASCII digits only."""

    low: int
    high: int

    def wrap(self, inner: CoreSchema) -> CoreSchema:
        # Before pydantic's integer parsing, which would take non-ASCII digits.
        return core_schema.no_info_before_validator_function(self.check, inner)

    def check(self, value: Any) -> int:
        text = value.strip() if isinstance(value, str) else ""
        significant = text.lstrip("0") or "0"  # longer than `high`: out of range, not parsed
        if not (
            text.isascii()
            and text.isdigit()
            and len(significant) <= len(str(self.high))
            and self.low <= int(significant) <= self.high
        ):
            raise ValueError(f"must be an integer between {self.low} and {self.high}")
        return int(significant)

    def schema(self) -> dict[str, Any]:
        return {"minimum": self.low, "maximum": self.high}


@dataclass(frozen=True, slots=True, init=False)
class OneOf(Constraint):
    values: tuple[str, ...]

    def __init__(self, *values: str) -> None:
        object.__setattr__(self, "values", values)

    def check(self, value: str) -> str:
        if value not in self.values:
            raise ValueError("must be one of " + ", ".join(self.values))
        return value

    def schema(self) -> dict[str, Any]:
        return {"enum": list(self.values)}


@dataclass(frozen=True, slots=True)
class Matching(Constraint):
    """A string matching `pattern` (also given to the schema), else `message`."""

    pattern: str
    message: str
    max_length: int | None = None

    def check(self, value: str) -> str:
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(self.message)
        if not _compiled(self.pattern).search(value):
            raise ValueError(self.message)
        return value

    def schema(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"pattern": self.pattern}
        if self.max_length is not None:
            extra["maxLength"] = self.max_length
        return extra


@dataclass(frozen=True, slots=True)
class Text(Constraint):
    """A string of at most `max_length` characters (after trimming), without NUL."""

    max_length: int

    def check(self, value: str) -> str:
        if len(value) > self.max_length:
            raise ValueError(f"must be at most {self.max_length} characters")
        if "\x00" in value:
            raise ValueError(NO_NUL_MESSAGE)
        return value

    def schema(self) -> dict[str, Any]:
        return {"maxLength": self.max_length, "pattern": NO_NUL_PATTERN}


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
