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


# The JSON-schema keywords that state a rule; each parameter's documented schema must carry the
# model's own (the document says exactly what QueryModel.parse enforces).
RULE_KEYWORDS = ("type", "enum", "pattern", "minimum", "maximum", "maxLength", "default")


def test_query_models_are_the_documented_parameters() -> None:
    """Each list-like route documents exactly its query model: the same names, required-ness
    and, per parameter, the rule keywords of the model's JSON schema."""
    from paysys.admin.app import create_app as admin_app
    from paysys.payments.app import create_app as payments_app
    from paysys.payments.schemas import PaymentListQuery, RecipientsQuery, ReportQuery

    payments_doc, admin_doc = payments_app().openapi(), admin_app().openapi()
    routes = [
        (payments_doc, "/api/payments", PaymentListQuery),
        (admin_doc, "/api/admin/payments", PaymentListQuery),
        (payments_doc, "/api/payments/recipients", RecipientsQuery),
        (payments_doc, "/api/payments/reports", ReportQuery),
    ]
    for doc, path, model in routes:
        model_schema = model.model_json_schema(by_alias=True)
        documented = {
            p["name"]: p for p in doc["paths"][path]["get"]["parameters"] if p["in"] == "query"
        }
        assert set(documented) == set(model_schema["properties"]), path
        assert model_schema["additionalProperties"] is False  # unknown parameters → 400
        for name, parameter in documented.items():
            own = model_schema["properties"][name]
            rules = {k: own[k] for k in RULE_KEYWORDS if k in own and own[k] is not None}
            assert {k: parameter["schema"].get(k) for k in rules} == rules, (path, name)
            assert parameter["required"] is (name in model_schema.get("required", ())), name
            assert parameter.get("description"), (path, name)
        # every parameter states at least one rule besides its type, except free text
        for name, parameter in documented.items():
            assert set(parameter["schema"]) & {"enum", "pattern", "maximum", "maxLength"}, name


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
