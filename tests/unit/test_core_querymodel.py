"""core.querymodel: one model validates a query string and documents it; the document states
exactly what is enforced (ASCII digits only, enums, lengths, unknown and repeated names)."""

from __future__ import annotations

from typing import Annotated, Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field
from starlette.datastructures import QueryParams

from paysys.core.errors import AppError
from paysys.core.querymodel import Integer, Matching, OneOf, QueryModel, Text
from paysys.payments.schemas import Omitted, PaymentListQuery


class Sample(QueryModel):
    page: Annotated[int, Integer(1, 50)] = Field(1, description="page")
    order: Annotated[str, OneOf("asc", "desc")] = Field("desc", description="order")
    code: Annotated[str, Matching("^[A-Z]{2}$", "must be two capitals")] | Omitted = Field(
        None, alias="countryCode", description="a code"
    )
    q: Annotated[str, Text(5)] | Omitted = Field(None, description="text")


def parse(query: str) -> Sample:
    return Sample.parse(QueryParams(query))


def refusal(query: str, model: type[QueryModel] = Sample) -> dict[str, Any]:
    with pytest.raises(AppError) as info:
        model.parse(QueryParams(query))
    assert info.value.status == 400 and info.value.code == "VALIDATION_ERROR"
    return {"message": info.value.message, "details": info.value.details}


def test_values_defaults_aliases_and_trimming() -> None:
    assert parse("") == Sample()
    got = parse("page=%2007%20&order=asc&countryCode=DE&q=%20ab%20")
    assert (got.page, got.order, got.code, got.q) == (7, "asc", "DE", "ab")
    assert parse("page=" + "0" * 30 + "3").page == 3  # leading zeros are still the number


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=²", "page: must be an integer between 1 and 50"),  # int() refuses it: was a 500
        ("page=٣", "page: must be an integer between 1 and 50"),  # int() reads 3: was accepted
        ("page=\uff13", "page: must be an integer between 1 and 50"),  # fullwidth
        ("page=", "page: must be an integer between 1 and 50"),
        ("page=0", "page: must be an integer between 1 and 50"),
        ("page=51", "page: must be an integer between 1 and 50"),
        ("page=-1", "page: must be an integer between 1 and 50"),
        ("page=%2B1", "page: must be an integer between 1 and 50"),
        ("page=1.0", "page: must be an integer between 1 and 50"),
        ("page=" + "9" * 5000, "page: must be an integer between 1 and 50"),
        ("order=up", "order: must be one of asc, desc"),
        ("order=", "order: must be one of asc, desc"),
        ("countryCode=de", "countryCode: must be two capitals"),
        ("countryCode=D%C3%89", "countryCode: must be two capitals"),
        ("q=abcdef", "q: must be at most 5 characters"),
        ("code=DE", "code: unknown query parameter"),  # the field name is not the parameter
        ("other=1", "other: unknown query parameter"),
        ("page=1&page=2", "page: must be given once"),
        ("q=a%00b", "q: must not contain NUL characters"),  # PostgreSQL: was a 500
        ("order=asc%00", "order: must not contain NUL characters"),
    ],
)
def test_refusals_name_the_parameter_and_the_rule(query: str, message: str) -> None:
    assert refusal(query)["message"] == message


def test_text_documents_and_enforces_no_nul() -> None:
    schema = {p["name"]: p["schema"] for p in Sample.openapi_parameters()}["q"]
    assert schema["maxLength"] == 5
    assert jsonschema.Draft202012Validator(schema).is_valid("ab c")
    assert not jsonschema.Draft202012Validator(schema).is_valid("a\x00b")
    assert Text(5).check("ab") == "ab"
    with pytest.raises(ValueError, match="NUL"):
        Text(5).check("a\x00")


def test_every_failing_parameter_is_detailed_once() -> None:
    details = refusal("order=up&page=0&countryCode=x")["details"]
    assert [d["field"] for d in details] == ["page", "order", "countryCode"]


def test_documented_parameters_are_fastapis_rendering_of_the_model() -> None:
    documented = {p["name"]: p for p in Sample.openapi_parameters()}
    assert list(documented) == ["page", "order", "countryCode", "q"]
    assert documented["page"]["schema"] | {"title": None} == {
        "type": "integer",
        "minimum": 1,
        "maximum": 50,
        "default": 1,
        "description": "page",
        "title": None,
    }
    assert documented["order"]["schema"]["enum"] == ["asc", "desc"]
    assert documented["countryCode"]["schema"]["pattern"] == "^[A-Z]{2}$"
    assert "anyOf" not in documented["countryCode"]["schema"]  # absent, never null
    assert documented["q"]["schema"]["maxLength"] == 5
    assert all(p["in"] == "query" and p["required"] is False for p in documented.values())
    Sample.openapi_parameters()[0]["name"] = "changed"  # callers get copies
    assert Sample.openapi_parameters()[0]["name"] == "page"


# The payments list parameters whose whole rule JSON Schema can state (dates, currencies and
# amounts have rules beyond it: calendar dates, active ISO codes, per-currency decimals).
EXACT = ("page", "limit", "sort", "order", "status", "type", "q")
SCHEMAS = {p["name"]: p["schema"] for p in PaymentListQuery.openapi_parameters()}
values = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="0123456789²٣\uff13 -+.", max_size=8),
    st.integers(min_value=-5, max_value=2_000_000).map(str),
    st.sampled_from(["asc", "desc", "createdAt", "amount", "pending", "instant", "x" * 201]),
)


def documented_valid(name: str, raw: str) -> bool:
    """The document's verdict on a query value (strings are trimmed, §1.3; an integer is its
    decimal ASCII digits)."""
    schema = SCHEMAS[name]
    value: Any = raw.strip()
    if schema["type"] == "integer":
        if not (value.isascii() and value.isdigit()):
            return False
        value = int(value)
    return jsonschema.Draft202012Validator(schema).is_valid(value)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXACT), values)
def test_payments_list_accepts_exactly_what_it_documents(name: str, raw: str) -> None:
    try:
        PaymentListQuery.parse(QueryParams([(name, raw)])).to_list_query()
        accepted = True
    except AppError as exc:
        assert exc.status == 400
        accepted = False
    assert accepted is documented_valid(name, raw), (name, raw)
