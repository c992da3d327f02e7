"""core.openapi: FastAPI's phantom 422 becomes the real 400; every operation documents errors."""

from __future__ import annotations

import json

from fastapi import APIRouter, Header
from pydantic import BaseModel

from paysys.core.config import Settings
from paysys.core.http import create_service_app
from paysys.core.openapi import ERROR_SCHEMA_NAME, rewrite_error_responses
from paysys.core.routing import JsonBodyRoute


class Body(BaseModel):
    x: int


router = APIRouter(prefix="/api/t", route_class=JsonBodyRoute)


@router.post("", responses={422: {"description": "IDEMPOTENCY_KEY_REUSED"}})
async def create(body: Body, idempotency_key: str | None = Header(default=None)) -> dict:  # type: ignore[type-arg]
    return {}


@router.get("/{item_id}")
async def read(item_id: str) -> dict:  # type: ignore[type-arg]
    return {}


def test_service_documents_real_error_statuses() -> None:
    app = create_service_app("t", [router], settings=Settings(background_workers=False))
    doc = app.openapi()
    assert app.openapi() is doc  # cached
    read_op = doc["paths"]["/api/t/{item_id}"]["get"]["responses"]
    assert "422" not in read_op
    assert read_op["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        ERROR_SCHEMA_NAME
    )
    assert "default" in read_op
    create_op = doc["paths"]["/api/t"]["post"]["responses"]
    assert create_op["422"]["description"] == "IDEMPOTENCY_KEY_REUSED"  # a route's own 422 stays
    # ...and, documented by description only, it is given the envelope as its schema
    assert create_op["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        ERROR_SCHEMA_NAME
    )
    assert "default" in create_op
    schemas = doc["components"]["schemas"]
    assert ERROR_SCHEMA_NAME in schemas
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas


def test_rewrite_handles_documents_without_paths() -> None:
    doc = rewrite_error_responses({"openapi": "3.1.0", "info": {}})
    assert ERROR_SCHEMA_NAME in doc["components"]["schemas"]


def test_payment_list_queries_document_exactly_what_the_parser_reads() -> None:
    """The list query is parsed by hand (parse_list_query), so its OpenAPI parameters are
    written out once (LIST_QUERY_DOCS); both list routes must show exactly those names."""
    from paysys.admin.app import create_app as admin_app
    from paysys.payments.app import create_app as payments_app
    from paysys.payments.schemas import LIST_PARAMS

    for app, path in ((payments_app(), "/api/payments"), (admin_app(), "/api/admin/payments")):
        operation = app.openapi()["paths"][path]["get"]
        assert {p["name"] for p in operation["parameters"]} == set(LIST_PARAMS), path


def test_one_error_envelope_schema_in_every_document_and_the_merged_one() -> None:
    """Every service documents errors with the components generated from
    core.schemas.ErrorEnvelope (no second, hand-written schema), so the gateway's merge
    keeps exactly one; the schema is valid JSON Schema and real error bodies match it."""
    import importlib

    import jsonschema

    from paysys.core.envelope import error_body
    from paysys.core.errors import AppError
    from paysys.core.http import error_response
    from paysys.core.openapi import error_schemas
    from paysys.gateway.openapi import merge_documents

    expected = error_schemas()
    assert set(expected) == {"ErrorEnvelope", "ErrorBody"}
    documents = {}
    for name in ("auth", "payments", "admin", "profile"):
        app = importlib.import_module(f"paysys.{name}.app").create_app(
            Settings(background_workers=False)
        )
        documents[name] = doc = app.openapi()
        schemas = doc["components"]["schemas"]
        assert {k: schemas[k] for k in expected} == expected, name
        assert not {"ApiError", "ErrorResponse"} & set(schemas), name
    merged = merge_documents(documents)
    schemas = merged["components"]["schemas"]
    # identical in every service, so never renamed per service by the merge
    assert sorted(k for k in schemas if k.endswith(("ErrorBody", "ErrorEnvelope"))) == [
        "ErrorBody",
        "ErrorEnvelope",
    ]
    for ref in _refs(merged):
        section, name = ref.removeprefix("#/components/").split("/")
        assert name in merged["components"][section], ref
    # valid JSON Schema (2020-12, as OpenAPI 3.1 uses), and the bodies the apps send match it
    jsonschema.Draft202012Validator.check_schema(schemas["ErrorEnvelope"])
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/ErrorEnvelope", "components": merged["components"]}
    )
    validator.validate(error_body("NOT_FOUND", "Route not found"))
    failure = AppError("VALIDATION_ERROR", "x: bad", [{"field": "x", "message": "bad"}])
    validator.validate(json.loads(bytes(error_response(failure).body)))
    assert not validator.is_valid({"success": True, "error": {"code": "X", "message": "m"}})
    assert not validator.is_valid({"success": False, "error": {"message": "no code"}})


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []
